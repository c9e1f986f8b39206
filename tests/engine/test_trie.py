"""The lesion engine against the obvious way: a copy of the model with its blocks really replaced."""
import pytest
import torch

import respaths
from respaths.core import PARALLEL, Plan, delete_blocks, full_plan
from respaths.engine import EngineOptions, build_trie, evaluate_plans, trie_cost
from respaths.metrics import ClassifierError
from respaths.experiments.lesion import lesioned_model, random_plans, reorder_plans, single_plans

from tests.helpers import data, tiny

BATCH = 16


def naive_logits(model, plan, x):
    twin = lesioned_model(model, plan, x[:2]).eval()
    with torch.inference_mode():
        return torch.cat([twin(x[s:s + BATCH]) for s in range(0, len(x), BATCH)])


def experiment_plans(view, residual=True):
    specs = single_plans(view) + random_plans(view, [2, 4], 2, seed=0)
    if residual:
        specs += reorder_plans(view, [1, 3], 2, seed=0)
    return [full_plan(len(view))] + [sp.plan for sp in specs]


@pytest.mark.parametrize("name", ["resnet20", "preresnet20", "vgg15"])
def test_engine_equals_naive_exactly_at_fp32(name):
    model = tiny(name)
    x, y = data()
    view = respaths.view(model, x[:2])
    plans = experiment_plans(view, residual=name != "vgg15")
    results = evaluate_plans(view, (x, y), plans, batch_size=BATCH, keep_logits=True)
    distinct = set()
    for plan, r in zip(plans, results):
        ref = naive_logits(model, plan, x)
        assert torch.equal(r.examples["logits"], ref), plan.key()
        assert ClassifierError.test_numbers(r)["errors"] == int((ref.argmax(1) != y).sum())
        assert torch.equal(r.examples["correct"], ref.argmax(1) == y)
        assert r["loss"] * r["n"] == pytest.approx(float(torch.nn.functional.cross_entropy(ref, y, reduction="sum")), rel=1e-6)
        distinct.add(tuple(ref[0].tolist()))
    assert len(distinct) > len(plans) // 2  # the plans really differ, so equality is not vacuous


def test_branch_cache_bound_only_changes_time():
    model = tiny("preresnet20")
    x, y = data(24)
    view = respaths.view(model, x[:2])
    plans = experiment_plans(view)
    big = evaluate_plans(view, (x, y), plans, batch_size=BATCH, keep_logits=True)
    none = evaluate_plans(view, (x, y), plans, batch_size=BATCH, keep_logits=True, engine=EngineOptions(cache_bytes=0))
    for a, b in zip(big, none):
        assert torch.equal(a.examples["logits"], b.examples["logits"])


def test_trie_shares_prefixes():
    n = 9
    plans = [full_plan(n)] + [delete_blocks(n, [i]) for i in range(n)]
    # the baseline spine (n steps) plus, for each i, the deletion and the n-1-i blocks after it
    assert trie_cost(plans) == (n + sum(1 + n - 1 - i for i in range(n)), n * (n + 1))
    root = build_trie(plans + [full_plan(n)])  # a duplicate plan ends on the same leaf
    node = root
    for step in full_plan(n).steps:
        node = node.children[step]
    assert node.ends == [0, n + 1] and root.weight == n + 2


def test_parallel_steps_and_duplicates():
    model = tiny("preresnet20")
    x, y = data(20)
    view = respaths.view(model, x[:2])
    par = Plan((("run", 0), (PARALLEL, (1, 2)), *(("run", i) for i in range(3, len(view)))))
    plans = [full_plan(len(view)), par, par]
    res = evaluate_plans(view, (x, y), plans, batch_size=8, keep_logits=True)
    with torch.inference_mode():
        ref = torch.cat([respaths.run_plan(view, x[s:s + 8], par) for s in range(0, 20, 8)])
    assert torch.equal(res[1].examples["logits"], ref) and torch.equal(res[2].examples["logits"], ref)
    assert not torch.equal(res[0].examples["logits"], ref)


def test_timing_and_model_state_are_kept():
    model = tiny("resnet20").train()
    x, y = data(32)
    view = respaths.view(model, x[:2])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    plans = [full_plan(len(view)), delete_blocks(len(view), [3])]
    res = evaluate_plans(view, (x, y), plans, batch_size=BATCH, engine=EngineOptions(fast=True))
    assert all(r.seconds > 0 for r in res) and res[1]["n"] == 32
    assert model.training and all(m.training for m in model.modules())  # eval only while evaluating
    after = model.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)
    assert all(p.is_contiguous() for p in model.parameters())  # channels_last undone
    assert not any("forward" in vars(m) for m in model.modules())  # BatchNorm forward restored


def test_a_block_that_changes_its_input_in_place_is_refused():
    """The trie hands one activation to several children, so an in-place op on it would be wrong."""
    model = tiny("preresnet14")
    x, y = data(8)
    model.blocks[2].branch = torch.nn.Sequential(torch.nn.ReLU(inplace=True), model.blocks[2].branch)
    view = respaths.view(model, x[:2])
    with pytest.raises(respaths.core.UserError, match="block 2 .* in place"):
        evaluate_plans(view, (x, y), [full_plan(len(view)), delete_blocks(len(view), [1])])
