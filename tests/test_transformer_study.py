"""lesion, reorder, paths and study on Hugging Face models with --text, against plain computations.

The references: the transformers model itself with its layer list really edited (layers removed or
reordered) and its logits scored by a cross-entropy written here; respaths.metrics' plain
`Metric.__call__` (one plan run alone, no trie); and autograd through the whole network."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
from transformers import AutoTokenizer, GPT2LMHeadModel  # noqa: E402

import respaths  # noqa: E402
from respaths.layers import importance as li  # noqa: E402
from respaths.data.text import read_text  # noqa: E402
from respaths.cli import main  # noqa: E402
from respaths.core import delete_blocks, reorder_blocks  # noqa: E402
from respaths.metrics import EmbeddingCosine, LMLoss  # noqa: E402
from tests.tiny_transformers import TEXT, V, edited, model_out, save_with_tokenizer, tiny  # noqa: E402

SEQ = "16"


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2")
    save_with_tokenizer(tiny("gpt2"), d / "model", TEXT)
    (d / "t.txt").write_text(TEXT)
    return d


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    save_with_tokenizer(tiny("bert"), d / "model", TEXT)
    (d / "lines.txt").write_text(TEXT.replace(" and ", "\n").replace(" so ", "\n"))
    return d


def plain_setup(model_dir, text):
    """The model as transformers loads it, its view, and the text as batches (as the CLI reads it)."""
    m = transformers.AutoModel.from_pretrained(model_dir) if "bert" in str(model_dir) else \
        GPT2LMHeadModel.from_pretrained(model_dir)
    m.eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    v = respaths.view(m)
    return m, v, read_text(text, v, tok, int(SEQ), 8)


def naive_lm_loss(model, batches):
    """Mean next-token cross-entropy over every predicted token of every (unpadded) batch."""
    nll, n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            logits = model_out(model, {"input_ids": b["input_ids"]})
            nll += float(F.cross_entropy(logits[:, :-1].flatten(0, 1), b["input_ids"][:, 1:].flatten(),
                                         reduction="sum"))
            n += b["input_ids"][:, 1:].numel()
    return nll / n


def close(a, b, rel=1e-6):
    return abs(a - b) <= rel * abs(b)


def test_cli_lesion_single_on_gpt2_equals_edited_model_and_plain_metric(gpt2, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["lesion", str(gpt2 / "model"), "--text", str(gpt2 / "t.txt"), "--seq-len", SEQ, "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "baseline LM loss" in printed and "ppl" in printed
    doc = json.loads((out / "lesion-single.json").read_text())
    assert doc["meta"]["metric"] == "lm" and math.isclose(doc["meta"]["chance"], math.log(V))
    m, v, batches = plain_setup(gpt2 / "model", gpt2 / "t.txt")
    n = len(v)
    recs = {r["key"]: r for r in doc["records"]}
    assert set(recs) == {"baseline"} | {f"single {i}" for i in range(n)}
    assert close(recs["baseline"]["loss"], naive_lm_loss(m, batches))
    assert doc["baseline"]["loss"] == recs["baseline"]["loss"]
    assert math.isclose(recs["baseline"]["ppl"], math.exp(recs["baseline"]["loss"]))
    for i in range(n):
        r = recs[f"single {i}"]
        plain = LMLoss()(v, batches, delete_blocks(n, [i]))
        assert close(r["loss"], plain["loss"]) and r["n"] == plain["n"]
        assert close(r["loss"], naive_lm_loss(edited(m, "gpt2", [j for j in range(n) if j != i]), batches))
        assert math.isclose(r["delta"], r["loss"] - recs["baseline"]["loss"], abs_tol=1e-12)
    assert (out / "lesion-single.png").is_file()  # the figure, on the LM loss axis
    # resumes to the same numbers
    assert main(args) == 0
    again = json.loads((out / "lesion-single.json").read_text())
    assert [r["loss"] for r in again["records"]] == [r["loss"] for r in doc["records"]]


def test_cli_random_and_reorder_on_gpt2_equal_plain_metric(gpt2, tmp_path):
    out = tmp_path / "runs"
    common = [str(gpt2 / "model"), "--text", str(gpt2 / "t.txt"), "--seq-len", SEQ, "--out", str(out),
              "--samples", "3", "--chunk", "2"]
    assert main(["lesion", *common, "--mode", "random", "--k", "1-3"]) == 0
    assert main(["reorder", *common, "--k", "1,3"]) == 0
    m, v, batches = plain_setup(gpt2 / "model", gpt2 / "t.txt")
    n = len(v)
    rand = json.loads((out / "lesion-random.json").read_text())["records"]
    assert len(rand) == 1 + 3 * 3
    for r in rand[1::3]:
        assert close(r["loss"], LMLoss()(v, batches, delete_blocks(n, r["deleted"]))["loss"])
        kept = [j for j in range(n) if j not in r["deleted"]]
        assert close(r["loss"], naive_lm_loss(edited(m, "gpt2", kept), batches))
    reo = json.loads((out / "reorder.json").read_text())
    assert reo["meta"]["metric"] == "lm"
    for r in reo["records"][1:]:
        assert sorted(r["order"]) == list(range(n)) and r["order"] != list(range(n))
        assert close(r["loss"], LMLoss()(v, batches, reorder_blocks(r["order"]))["loss"])
        assert close(r["loss"], naive_lm_loss(edited(m, "gpt2", r["order"]), batches))


def test_cli_paths_on_gpt2_are_gradients_of_the_lm_loss(gpt2, tmp_path):
    from respaths.paths import naive_path_gradient, path_loss

    out = tmp_path / "runs"
    assert main(["paths", str(gpt2 / "model"), "--text", str(gpt2 / "t.txt"), "--seq-len", SEQ, "--out", str(out),
                 "--samples", "4", "--batches", "1"]) == 0
    doc = json.loads((out / "paths.json").read_text())
    m, v, batches = plain_setup(gpt2 / "model", gpt2 / "t.txt")
    n = len(v)
    b = batches[0]
    # the loss is GPT-2's own next-token loss
    with torch.no_grad():
        own = m(input_ids=b["input_ids"], labels=b["input_ids"], use_cache=False).loss
        assert torch.allclose(path_loss(model_out(m, {"input_ids": b["input_ids"]}), b), own, rtol=1e-6)
    recs = {r["length"]: r for r in doc["records"]}
    assert sorted(recs) == list(range(n + 1)) and doc["meta"]["metric"] == "lm"
    m.requires_grad_(False)
    inputs = {"input_ids": b["input_ids"]}
    for k, chosen in ((0, []), (n, list(range(n)))):  # one path each: all shortcuts, all branches
        ref = float(torch.linalg.vector_norm(naive_path_gradient(v, inputs, b, chosen)))
        assert math.isclose(recs[k]["mean"], ref, rel_tol=1e-4)


def test_cli_study_on_gpt2_writes_report_on_lm_loss_axis(gpt2, tmp_path):
    out = tmp_path / "study"
    assert main(["study", str(gpt2 / "model"), "--text", str(gpt2 / "t.txt"), "--seq-len", SEQ, "--out", str(out),
                 "--no-progress"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["metric"]["name"] == "lm" and math.isclose(run["metric"]["chance"], math.log(V))
    for stem in ("fig3-single-deletion", "fig5a-random-deletion", "fig5b-reorder", "fig6-paths",
                 "fig7-surviving-paths"):
        png = out / "figures" / f"{stem}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "LM loss" in html and "test error (%)" not in html and "ln(vocabulary size)" in html
    from respaths.study.read import load_study
    study = load_study(out)
    assert study.metric["name"] == "lm" and math.isclose(study.metric["chance"], math.log(V))
    single = json.loads((out / "results" / "lesion-single.json").read_text())
    assert study.single["resnet"]["errors"] == [r["loss"] for r in single["records"][1:]]
    # a second call keeps every step
    assert main(["study", str(gpt2 / "model"), "--text", str(gpt2 / "t.txt"), "--seq-len", SEQ, "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads((out / "results" / "lesion-single.json").read_text()) == single


def test_cli_lesion_on_bert_encoder_gives_cosine_records(bert, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["lesion", str(bert / "model"), "--text", str(bert / "lines.txt"), "--seq-len", SEQ,
                 "--out", str(out)]) == 0
    assert "embedding cosine" in capsys.readouterr().out
    doc = json.loads((out / "lesion-single.json").read_text())
    assert doc["meta"]["metric"] == "cosine"
    _, v, batches = plain_setup(bert / "model", bert / "lines.txt")
    lines = [ln for ln in (bert / "lines.txt").read_text().splitlines() if ln.strip()]
    recs = doc["records"]
    assert recs[0]["n"] == len(lines) and math.isclose(recs[0]["cos"], 1.0, abs_tol=1e-6)
    for r in recs[1:]:
        assert close(r["cos"], EmbeddingCosine()(v, batches, delete_blocks(len(v), r["deleted"]))["cos"])
        assert r["cos"] < 1.0
    assert (out / "lesion-single.png").is_file()
    # the study of an encoder: its figures on the 1 - cosine axis, no path gradients (refused: see paths)
    assert main(["study", str(bert / "model"), "--text", str(bert / "lines.txt"), "--seq-len", SEQ,
                 "--out", str(tmp_path / "study"), "--no-progress"]) == 0
    assert (tmp_path / "study" / "figures" / "fig3-single-deletion.png").is_file()
    assert not (tmp_path / "study" / "results" / "paths.json").exists()
    assert "1 − cosine" in (tmp_path / "study" / "report.html").read_text()


@pytest.mark.parametrize("case", ["text-for-image-model", "no-text-for-hf", "dataset-for-hf", "paths-on-encoder",
                                  "study-compare-hf"])
def test_bad_text_input_is_one_sentence_and_writes_nothing(gpt2, bert, tmp_path, capsys, case):
    out = tmp_path / "out"
    text = str(gpt2 / "t.txt")
    argv = {"text-for-image-model": ["lesion", "--model", "respaths:resnet20", "--dataset", "synthetic",
                                     "--text", text],
            "no-text-for-hf": ["lesion", str(gpt2 / "model")],
            "dataset-for-hf": ["reorder", str(gpt2 / "model"), "--text", text, "--dataset", "cifar10"],
            "paths-on-encoder": ["paths", str(bert / "model"), "--text", str(bert / "lines.txt")],
            "study-compare-hf": ["study", str(gpt2 / "model"), "--text", text, "--compare", "vgg=runs/x"]}[case]
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error:" in err and "Traceback" not in err
    assert not out.exists()


def test_explicit_classifier_metric_gives_the_classifier_path_errors():
    """metric= on image data: the metric's records (error, accuracy, loss) agree with the default records."""
    from respaths.experiments.lesion import lesion_single
    from respaths.metrics import ClassifierError
    from tests.tiny_transformers import inputs_for

    m = tiny("vit")
    x, y = inputs_for("vit"), torch.tensor([0, 3, 4])
    plain = lesion_single(respaths.view(m), (x, y), batch_size=2)
    scored = lesion_single(respaths.view(m), (x, y), batch_size=2, metric=ClassifierError())
    assert [r["key"] for r in plain] == [r["key"] for r in scored]
    for a, b in zip(plain, scored):
        assert b["error"] == a["error"] and math.isclose(b["loss"], a["loss"], rel_tol=1e-6)
        assert math.isclose(b["delta"], a["error"] - plain[0]["error"], abs_tol=1e-12)
        assert "mcnemar_p" in a and "mcnemar_p" not in b
