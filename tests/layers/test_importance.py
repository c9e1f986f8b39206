"""Layer-importance methods (Block Influence, angular distance, greedy pruning, the painters variants)
and `respaths layers`, each against a naive computation on tiny transformers."""
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

import respaths  # noqa: E402
from respaths.layers import importance as li  # noqa: E402
from respaths.metrics import LMLoss  # noqa: E402
from respaths.cli import main  # noqa: E402
from respaths.core import PARALLEL, RUN  # noqa: E402

from tests.tiny_transformers import (TEXT, V, edited, layer_io, model_out, models,  # noqa: E402,F401
                                     save_with_tokenizer, text_inputs)


# ---------------------------------------------------------------------------------------------
# Methods


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_block_influence_equals_hooks(models, name):
    m, inp = models[name], text_inputs()
    ok = inp["attention_mask"].bool()
    ref = [(1 - F.cosine_similarity(a, b, dim=-1))[ok].mean().item() for a, b in layer_io(m, name, inp)]
    got = li.block_influence(respaths.view(m), [inp])
    assert got == pytest.approx(ref, abs=1e-6)
    assert li.influence_order(got) == sorted(range(len(ref)), key=lambda i: ref[i])


def test_angular_distance_equals_hooks(models):
    m, inp = models["llama"], text_inputs()
    io = layer_io(m, "llama", inp)
    xs = [a for a, _ in io] + [io[-1][1]]  # inputs of layers 0..L-1, then the last output
    last = inp["attention_mask"].sum(1) - 1  # right padding: the last real token
    d = li.angular_distances(respaths.view(m), [inp])
    for l in range(len(xs)):
        assert d[l, l] == 0
        for n in range(1, len(xs) - l):
            a, b = xs[l][torch.arange(3), last].double(), xs[l + n][torch.arange(3), last].double()
            ref = (torch.arccos(F.cosine_similarity(a, b, dim=-1)) / math.pi).mean().item()
            assert d[l, l + n].item() == pytest.approx(ref, rel=1e-6)
    for n in (1, 2, 3):
        assert li.best_span(d, n) == min(range(len(xs) - n), key=lambda l: d[l, l + n].item())


def test_greedy_pruning_equals_brute_force(models):
    m = models["gpt2"]
    batch = {"input_ids": text_inputs()["input_ids"][:, :]}
    batch["input_ids"][:, :] = torch.randint(3, V, (3, 9), generator=torch.Generator().manual_seed(9))
    got = li.greedy_pruning(respaths.view(m), [batch], LMLoss(), steps=3)

    def loss_without(removed):  # the model with those layers really removed
        keep = [i for i in range(5) if i not in removed]
        with torch.no_grad():
            return edited(m, "gpt2", keep)(**batch, labels=batch["input_ids"], use_cache=False).loss.item()

    removed = []
    for step in got:
        costs = {i: loss_without(removed + [i]) for i in range(5) if i not in removed}
        best = min(costs, key=lambda i: (costs[i], i))
        removed.append(best)
        assert step["block"] == best and step["removed"] == removed
        assert step["result"]["loss"] == pytest.approx(costs[best], rel=1e-5)


@pytest.mark.parametrize("split", ["layer", "attn_mlp"])
def test_painters_variants_equal_edited_models(models, split):
    m, inp = models["llama"], text_inputs()
    v = respaths.view(m, split=split)
    n = len(v)
    for k in (1, 3):
        span = li.middle_span(n, k)
        assert span == list(range((n - k) // 2, (n - k) // 2 + k))
        for variant in li.PAINTERS:
            plan = li.painters_plan(n, k, variant, seed=1, loops=2)
            with torch.no_grad():
                got = v(inp, plan)
                if split == "attn_mlp":  # against the plain loop over blocks, written out
                    x = v.stem(inp)
                    for op, i in plan.steps:
                        x = (torch.stack([v.blocks[j](x) for j in i]).mean(0) if op == PARALLEL
                             else v.blocks[i](x) if op == RUN else x)
                    assert torch.equal(got, v.head(x))
                    continue
                before, after = list(range(span[0])), list(range(span[-1] + 1, n))
                mid = {"skip": [], "repeat": [span[k // 2]] * k, "reverse": span[::-1],
                       "random": li.random_order(n, 1, span), "parallel": [tuple(span)],
                       "looped": [tuple(span)] * 2}[variant]
                ref = model_out(edited(m, "llama", before + mid + after), inp)
            assert torch.allclose(got, ref, atol=1e-5), (variant, k)
            if variant in ("skip", "repeat", "reverse", "random"):
                assert torch.equal(got, ref)
    assert sorted(li.random_order(n, 1, span)) == span


def test_cli_layers_decoder_resumes_to_identical_files(models, tmp_path, capsys):
    d = tmp_path / "gpt2"
    save_with_tokenizer(models["gpt2"], d, TEXT)
    (tmp_path / "t.txt").write_text(TEXT)
    args = ["layers", str(d), "--text", str(tmp_path / "t.txt"), "--seq-len", "16"]
    out = tmp_path / "runs" / "greedy"
    assert main(args + ["--method", "greedy", "--seeds", "2", "--out", str(out), "--steps", "2"]) == 0
    doc = json.loads((tmp_path / "runs" / "greedy.json").read_text())
    recs = {r["key"]: r for r in doc["records"]}
    assert doc["meta"]["metric"] == "lm" and doc["meta"]["blocks"] == 5
    assert {"baseline", "greedy k=1", "influence-order k=2", "random-order k=2 s=1"} <= set(recs)
    g1 = recs["greedy k=1"]
    tries = [r for r in doc["records"] if r["kind"] == "greedy-try" and r["k"] == 1]
    assert len(tries) == 5 and g1["loss"] == min(r["loss"] for r in tries)
    assert recs["baseline"]["ppl"] == pytest.approx(math.exp(recs["baseline"]["loss"]))
    assert (tmp_path / "runs" / "greedy.png").stat().st_size > 0 and (tmp_path / "runs" / "greedy.svg").exists()
    first = (tmp_path / "runs" / "greedy.json").read_text()
    args.append("--no-figure")
    assert main(args + ["--method", "greedy", "--seeds", "2", "--out", str(out), "--steps", "2"]) == 0  # resumes
    assert (tmp_path / "runs" / "greedy.json").read_text() == first
    assert main(args + ["--method", "painters", "--seeds", "2", "--out", str(tmp_path / "p"), "--spans", "1,3"]) == 0
    csv = (tmp_path / "p.csv").read_text().splitlines()
    assert csv[0].startswith("key,") and len(csv) == 1 + 1 + 2 * (len(li.PAINTERS) + 1)
    assert main(args + ["--method", "angular", "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main(args + ["--method", "painters", "--seeds", "2", "--out", str(tmp_path / "q"), "--spans", "9"]) == 2
    assert "middle span" in capsys.readouterr().err and not list(tmp_path.glob("q*"))
    with pytest.raises(SystemExit) as e:  # argparse: no such text file
        main(["layers", str(d), "--method", "influence", "--text", str(tmp_path / "x")])
    assert e.value.code == 2
    assert not (tmp_path / "runs" / "layers-influence.json").exists()


def test_layers_greedy_shows_a_bar_with_a_total_and_prints_its_result(models, tmp_path, capsys):
    """The bar counts every plan the method asks for, so it has a total and an ETA; at the end the command
    prints the order of removal, the metric after each step and Block Influence's ranking; a resumed run
    says how much it kept (issue 27)."""
    d = tmp_path / "gpt2"
    save_with_tokenizer(models["gpt2"], d, TEXT)
    (tmp_path / "t.txt").write_text(TEXT)
    options = dict(text=str(tmp_path / "t.txt"), seq_len=16, seeds=2, steps=2, out=str(tmp_path / "g"), figure=False)
    path = li.layers_main(str(d), "greedy", progress=True, **options)
    total = 1 + 3 * 2 + (5 + 4) + 2  # baseline; influence and 2 random orders at k = 1, 2; the tries; the choices
    err = capsys.readouterr().err.replace("\r", "\n")
    assert "layers --method greedy: 100%" in err and f"{total}/{total} [" in err
    assert re.search(rf"[\d.]+/{total} \[\d\d:\d\d<\d\d:\d\d", err), err  # part done, with an ETA
    doc = json.loads(path.read_text())
    assert li.planned_plans("greedy", respaths.view(models["gpt2"]), 2, seeds=2) + 1 == total
    assert sum("plan" in r for r in doc["records"]) == total

    li.layers_main(str(d), "greedy", progress=False, **options)  # everything there: kept, said how much
    assert f"{total}/{total} plans already done" in capsys.readouterr().err

    assert main(["layers", str(d), "--method", "greedy", "--text", options["text"], "--seq-len", "16", "--seeds", "2",
                 "--steps", "2", "--out", options["out"], "--no-figure"]) == 0
    out = capsys.readouterr().out
    recs = {r["key"]: r for r in doc["records"]}
    order = recs["greedy k=2"]["removed_order"]
    assert f"order of removal: {order[0]}, {order[1]}" in out
    for k in (1, 2):
        row = next(ln for ln in out.splitlines() if ln.split()[:1] == [str(k)])
        assert f"{order[k - 1]} (h.{order[k - 1]})" in row and f"{recs[f'greedy k={k}']['loss']:.4f}" in row
        assert f"{recs[f'influence-order k={k}']['loss']:.4f}" in row
    ranking = [r["block"] for r in sorted((r for r in doc["records"] if r["kind"] == "influence"),
                                          key=lambda r: r["influence"])]
    line = next(ln for ln in out.splitlines() if ln.startswith("Block Influence, least to most influential: "))
    assert [int(part.split()[0]) for part in line.split(": ", 1)[1].split(", ")] == ranking


def test_reading_a_long_text_does_not_warn_about_the_models_maximum_length(models, tmp_path):
    """A decoder reads the file as one stream cut into windows, so transformers' warning that the stream is
    longer than the model's maximum is expected here, and silenced (issue 27)."""
    import logging

    from transformers import AutoTokenizer

    from respaths.data.text import read_text
    save_with_tokenizer(models["gpt2"], tmp_path, TEXT)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, model_max_length=32)
    (tmp_path / "t.txt").write_text(TEXT)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("transformers").addHandler(handler)
    try:
        batches = read_text(tmp_path / "t.txt", respaths.view(models["gpt2"]), tokenizer, seq_len=16, batch_size=4)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert sum(b["input_ids"].numel() for b in batches) > 32  # the stream is longer than the maximum
    assert not [m for m in seen if "longer than the specified maximum" in m], seen


def test_cli_layers_encoder_influence(models, tmp_path):
    d = tmp_path / "bert"
    save_with_tokenizer(models["bert"], d, TEXT)
    lines = "\n".join(TEXT.split(" and ")) + "\n"
    (tmp_path / "s.txt").write_text(lines)
    assert main(["layers", str(d), "--method", "influence", "--text", str(tmp_path / "s.txt"),
                 "--out", str(tmp_path / "i"), "--split", "attn_mlp", "--no-figure"]) == 0
    doc = json.loads((tmp_path / "i.json").read_text())
    assert doc["meta"]["metric"] == "cosine" and doc["meta"]["blocks"] == 6
    recs = {r["key"]: r for r in doc["records"]}
    assert recs["baseline"]["cos"] == pytest.approx(1.0)
    assert len([k for k in recs if k.startswith("influence block=")]) == 6


def test_layers_results_saved_in_a_run_appear_in_its_report(models, tmp_path):
    from respaths.study.report import build

    run = tmp_path / "run"
    d = tmp_path / "gpt2"
    save_with_tokenizer(models["gpt2"], d, TEXT)
    (tmp_path / "t.txt").write_text(TEXT)
    from respaths.study.reproduce import reproduce

    reproduce("tiny", run, progress=False, log=lambda s: None)
    before = (run / "report.html").read_text().count("<img ")
    assert main(["layers", str(d), "--method", "influence", "--text", str(tmp_path / "t.txt"), "--seq-len", "16",
                 "--out", str(run / "results" / "layers-influence"), "--no-figure"]) == 0
    html = build([run]).read_text()
    assert html.count("<img ") == before + 1 and "respaths layers --method influence on GPT2LMHeadModel" in html
    assert (run / "figures" / "layers-influence.png").stat().st_size > 0
