"""The engine's speed options (respaths.engine.speed): BatchNorm folding and half precision, against
the exact engine."""
import shutil
import warnings

import pytest
import torch

import respaths
from respaths.core import delete_blocks, full_plan
from respaths.engine import EngineOptions, conv_bn_pairs, evaluate_plans
from respaths.experiments.lesion import single_plans

from tests.helpers import data, tiny

BATCH = 16


@pytest.mark.parametrize("name,pairs", [("resnet20", 19), ("preresnet20", 10)])
def test_batchnorm_folding(name, pairs):
    """Post-activation: every BN follows a conv; pre-activation: the stem's and each block's inner one,
    since the first BN of a block reads the block's input, which the shortcut also needs."""
    model = tiny(name)
    x, y = data(32)
    view = respaths.view(model, x[:2])
    with torch.inference_mode():
        assert len(conv_bn_pairs(view, x[:4])) == pairs
    plans = [full_plan(len(view))] + [sp.plan for sp in single_plans(view)]
    exact = evaluate_plans(view, (x, y), plans, batch_size=BATCH, keep_logits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # folding must pass its own check here, not fall back
        fast = evaluate_plans(view, (x, y), plans, batch_size=BATCH, keep_logits=True, engine=EngineOptions(fast=True))
    for a, b in zip(exact, fast):
        torch.testing.assert_close(b.examples["logits"], a.examples["logits"], rtol=1e-4, atol=1e-4)


def test_half_precision_on_request():
    model = tiny("preresnet20")
    x, y = data(16)
    view = respaths.view(model, x[:2])
    plans = [full_plan(len(view)), delete_blocks(len(view), [1])]
    exact = evaluate_plans(view, (x, y), plans, batch_size=BATCH, keep_logits=True)
    half = evaluate_plans(view, (x, y), plans, batch_size=BATCH, keep_logits=True,
                          engine=EngineOptions(dtype="bfloat16"))
    for a, b in zip(exact, half):
        assert not torch.equal(a.examples["logits"], b.examples["logits"])
        torch.testing.assert_close(b.examples["logits"], a.examples["logits"], rtol=0.1, atol=0.1 * float(a.examples["logits"].abs().max()))


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's inductor needs a C++ compiler (g++) on CPU")
def test_compile_on_a_hugging_face_view_reads_each_batchs_own_mask():
    """--compile on a transformer: its blocks read the batch's attention mask through a context variable
    (respaths.adapters.hf), which the compiled block must read anew for every batch, not keep from the
    first. Two batches of one shape, padded on the right and on the left, give the eager engine's loss."""
    from torch._dynamo.utils import counters

    from respaths import metrics
    from tests.tiny_transformers import text_inputs, tiny as tiny_transformer
    view = respaths.view(tiny_transformer("gpt2"))
    data = [text_inputs("right"), text_inputs("left")]
    plans = [full_plan(len(view)), delete_blocks(len(view), [2]), delete_blocks(len(view), [0, 4])]
    eager = evaluate_plans(view, data, plans, metric=metrics.LMLoss())
    counters.clear()
    compiled = evaluate_plans(view, data, plans, metric=metrics.LMLoss(), engine=EngineOptions(compile=True))
    assert counters["stats"]["unique_graphs"] > 0  # the blocks did run compiled
    for a, b in zip(eager, compiled):
        assert b["n"] == a["n"] and b["loss"] == pytest.approx(a["loss"], rel=1e-6)
