"""Metrics (respaths.metrics) on tiny transformers, against the model's own loss and a hand-pooled cosine."""
import math

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

import respaths  # noqa: E402
from respaths.layers import importance as li  # noqa: E402
from respaths.metrics import ClassifierError, EmbeddingCosine, LMLoss  # noqa: E402
from respaths.core import delete_blocks  # noqa: E402

from tests.tiny_transformers import edited, inputs_for, model_out, models, text_inputs  # noqa: E402,F401


# ---------------------------------------------------------------------------------------------
# Metrics


def test_lm_loss_equals_the_models_own_loss(models):
    m, inp = models["llama"], text_inputs("right")
    labels = inp["input_ids"].masked_fill(inp["attention_mask"] == 0, -100)
    with torch.no_grad():
        ref = m(**inp, labels=labels, use_cache=False).loss.item()
    r = LMLoss()(respaths.view(m), [inp])
    assert r["loss"] == pytest.approx(ref, rel=1e-6) and r["ppl"] == pytest.approx(math.exp(ref), rel=1e-6)
    assert r["n"] == int(inp["attention_mask"][:, 1:].sum())


def test_embedding_cosine_and_classifier_error(models):
    m, inp = models["bert"], text_inputs()
    metric = EmbeddingCosine()
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
    r = ClassifierError()(respaths.view(vit), [{"pixel_values": x, "labels": y}], delete_blocks(4, [2]))
    with torch.no_grad():
        logits = model_out(edited(vit, "vit", [0, 1, 3]), x)
    assert r["error"] == pytest.approx((logits.argmax(1) != y).float().mean().item())
    assert r["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
