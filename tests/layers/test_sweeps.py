"""Transformer sweeps through the trie engine equal the per-candidate way, on tiny models.

The per-candidate way is the one the published greedy methods use (SLEB, BlockPruner, FinerCut):
each plan run on its own over every batch, metric(view, batches, plan) (core.run_plan, no trie).
Random weights, eval mode, float32, one thread."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (BertConfig, BertForSequenceClassification, BertModel, GPT2Config,  # noqa: E402
                          GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM)

import respaths  # noqa: E402
from respaths.layers import importance as li  # noqa: E402
from respaths.core import delete_blocks  # noqa: E402
from respaths import metrics  # noqa: E402
from respaths.core import DELETE, PARALLEL, RUN, Plan, delete_blocks, full_plan, reorder_blocks  # noqa: E402
from respaths.engine import EngineOptions, evaluate_plans  # noqa: E402
from respaths.io.results import ResultStore  # noqa: E402

V = 97
REL = 1e-5


def tiny(name):
    torch.manual_seed({"gpt2": 2, "llama": 3, "bert": 0, "bertcls": 1}[name])
    small = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, attn_implementation="eager")
    if name == "gpt2":
        m = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=5, n_head=4, n_positions=64,
                                       bos_token_id=1, eos_token_id=2, attn_implementation="eager"))
    elif name == "llama":
        m = LlamaForCausalLM(LlamaConfig(vocab_size=V, num_hidden_layers=5, num_key_value_heads=2, pad_token_id=0,
                                         **small))
    elif name == "bert":
        m = BertModel(BertConfig(vocab_size=V, num_hidden_layers=4, **small))
    else:
        m = BertForSequenceClassification(BertConfig(vocab_size=V, num_hidden_layers=4, num_labels=3, **small))
    return m.float().eval()


@pytest.fixture(scope="module")
def models():
    return {name: tiny(name) for name in ("gpt2", "llama", "bert", "bertcls")}


def batches(padded=True, labels=False):
    """Two batches of token ids (3 x 9 and 2 x 7); with padding, some sequences end early."""
    g = torch.Generator().manual_seed(7)
    out = []
    for b, t in ((3, 9), (2, 7)):
        ids = torch.randint(3, V, (b, t), generator=g)
        batch = {"input_ids": ids}
        if padded:
            mask = torch.ones(b, t, dtype=torch.long)
            mask[1, t - 3:] = 0
            batch["input_ids"] = ids.masked_fill(mask == 0, 0)
            batch["attention_mask"] = mask
        if labels:
            batch["labels"] = torch.randint(0, 3, (b,), generator=g)
        out.append(batch)
    return out


def metric_for(name):
    return {"gpt2": metrics.LMLoss, "llama": metrics.LMLoss, "bert": metrics.EmbeddingCosine,
            "bertcls": metrics.ClassifierError}[name]()


def close(a, b):
    """Every metric field of two PlanResults equal within REL (relative)."""
    a, b = a.numbers, b.numbers
    assert set(a) == set(b)
    for f in b:
        assert a[f] == pytest.approx(b[f], rel=REL, abs=1e-12), f
    if "cos" in b:  # cosines of random-weight models sit near 1: compare what pruning ranks by, 1 - cos
        assert 1 - a["cos"] == pytest.approx(1 - b["cos"], rel=REL, abs=1e-12)


def some_plans(n):
    """Single deletions, pairs, a reordering, a repeat and a parallel step: prefixes shared and not."""
    plans = [full_plan(n)] + [delete_blocks(n, [i]) for i in range(n)] + [delete_blocks(n, [0, n - 1])]
    plans.append(reorder_blocks([0] + list(range(n - 1, 0, -1))))
    plans.append(Plan(((RUN, 0), (RUN, 1), (RUN, 1)) + tuple((RUN, i) for i in range(2, n))))
    plans.append(Plan(((RUN, 0), (PARALLEL, (1, 2))) + tuple((RUN, i) for i in range(3, n))))
    return plans


@pytest.mark.parametrize("split", ["layer", "attn_mlp"])
@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "bertcls"])
def test_engine_equals_per_candidate_for_every_metric(models, name, split):
    v = respaths.view(models[name], split=split)
    data = batches(padded=name != "gpt2", labels=name == "bertcls")
    plans = some_plans(len(v))
    metric = metric_for(name)
    naive = [metric(v, data, p) for p in plans]
    for cache_bytes in (1 << 30, 0):  # branch points kept, or all recomputed from the stem
        got = evaluate_plans(v, data, plans, metric=metric, engine=EngineOptions(cache_bytes=cache_bytes))
        assert len(got) == len(plans)
        for g, r in zip(got, naive):
            close(g, r)
            assert g.seconds >= 0
    if name == "bert":  # the reference (full model) added when it is not among the plans
        assert [r["cos"] for r in naive][0] == pytest.approx(1.0)
        got = evaluate_plans(v, data, plans[1:], metric=metric)
        assert len(got) == len(plans) - 1
        for g, r in zip(got, naive[1:]):
            close(g, r)
        assert min(r["cos"] for r in got) < 1 - 1e-5  # deleting a layer changes the embedding


def test_classifier_default_on_dict_batches_agrees_with_its_metric(models):
    v = respaths.view(models["bertcls"])
    data = batches(labels=True)
    plans = some_plans(len(v))
    default = evaluate_plans(v, data, plans)  # the engine's default metric: the classifier's
    naive = [metrics.ClassifierError()(v, data, p) for p in plans]
    for r, ref in zip(default, naive):
        assert r["n"] == ref["n"] == 5 and r["error"] == ref["error"]
        assert r["loss"] == pytest.approx(ref["loss"], rel=REL)


@pytest.mark.parametrize("name,split", [("gpt2", "layer"), ("llama", "layer"), ("llama", "attn_mlp"),
                                        ("bert", "layer"), ("bertcls", "layer")])
def test_greedy_engine_chooses_as_per_candidate(models, name, split):
    v = respaths.view(models[name], split=split)
    data = batches(padded=name != "gpt2", labels=name == "bertcls")
    metric = metric_for(name)
    naive = li.greedy_pruning(v, data, metric, evaluate=li.per_candidate_evaluator(v, data, metric))
    got = li.greedy_pruning(v, data, metric)  # default: the engine, one trie per step
    assert len(got) == len(v) - 1
    assert [s["block"] for s in got] == [s["block"] for s in naive]
    assert [s["removed"] for s in got] == [s["removed"] for s in naive]
    for g, r in zip(got, naive):
        close(g["result"], r["result"])


def test_greedy_ties_go_to_the_lower_index(models):
    """A metric that scores every plan alike: each step removes the lowest remaining index."""
    class Flat(metrics.LMLoss):
        @staticmethod
        def cost(r):
            return 0.0

    v = respaths.view(models["gpt2"])
    steps = li.greedy_pruning(v, batches(padded=False), Flat(), steps=3)
    assert [s["block"] for s in steps] == [0, 1, 2]


def parse_plan(key):
    """A plan back from its key ('r0 d1 p2+3 r4')."""
    steps = []
    for word in key.split():
        op, rest = word[0], word[1:]
        steps.append((PARALLEL, tuple(int(i) for i in rest.split("+"))) if op == "p"
                     else (RUN if op == "r" else DELETE, int(rest)))
    return Plan(tuple(steps))


@pytest.mark.parametrize("method", ["greedy", "angular", "painters"])
@pytest.mark.parametrize("name", ["llama", "bert"])
def test_run_layers_records_equal_per_candidate(models, tmp_path, monkeypatch, name, method):
    v = respaths.view(models[name])
    data = batches(padded=True)
    metric = metric_for(name)
    calls = []
    real = li.evaluate_plans
    monkeypatch.setattr(li, "evaluate_plans", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    store = ResultStore(tmp_path / method, {"method": method})
    path = li.run_layers(v, data, method, store, metric=metric, seeds=2, progress=False,
                        engine=EngineOptions(cache_bytes=1 << 16))
    doc = json.loads(path.read_text())
    planned = [r for r in doc["records"] if "plan" in r]
    fields = {"lm": ("n", "loss", "ppl"), "cosine": ("n", "cos")}[metric.name]
    for r in planned:
        ref = metric(v, data, parse_plan(r["plan"]))
        assert parse_plan(r["plan"]).key() == r["plan"]
        for f in fields:
            assert r[f] == pytest.approx(ref[f], rel=REL), (r["key"], f)
    keys = {r["key"] for r in doc["records"]}
    L = len(v)
    if method == "greedy":
        # baseline, then the curves (influence order and 2 random orders) together, then at most one
        # call a step (none where every try was already evaluated), each distinct plan evaluated once
        assert calls[0] == 1 and 1 < calls[1] <= 3 * (L - 1) and len(calls) <= 2 + (L - 1)
        assert {f"greedy k={k}" for k in range(1, L)} <= keys
        assert {f"random-order k={k} s=1" for k in range(1, L)} <= keys
        tries = [r for r in planned if r["kind"] == "greedy-try"]
        assert len(tries) == sum(L - k for k in range(L - 1))
        for k in range(1, L):  # the chosen plan is the cheapest try of its step, lowest index on a tie
            step = [r for r in tries if r["k"] == k]
            chosen = {r["key"]: r for r in planned}[f"greedy k={k}"]
            tried = lambda r: int(r["key"].rsplit("=", 1)[1].split("+")[-1])  # noqa: E731
            best = min(step, key=lambda r: (metric.cost(r), tried(r)))
            assert chosen["plan"] == best["plan"]
    elif method == "angular":
        assert calls == [1, L - 1] and {f"angular-prune n={n}" for n in range(1, L)} <= keys
    else:
        # one call for all variants; a variant that equals an earlier plan (k=1: repeat, reverse and
        # random are the full model) is not evaluated again
        assert len(calls) == 2 and calls[1] <= (L - 2) * (len(li.PAINTERS) + 1)
        assert {f"painters looped k={k}" for k in range(1, L - 1)} <= keys
    assert sum(calls) == len({r["plan"] for r in planned})  # each distinct plan evaluated once
    # resuming evaluates nothing and writes the same file
    first = path.read_text()
    calls.clear()
    again = li.run_layers(v, data, method, ResultStore(tmp_path / method, {"method": method}), metric=metric,
                          seeds=2, progress=False)
    assert calls == [] and again.read_text() == first


def test_cli_layers_passes_cache_mb(monkeypatch, tmp_path):
    from respaths.cli import main

    seen = {}

    def fake(model, method, **kw):
        seen.update(kw)
        path = tmp_path / "x.json"  # the command prints its result from the file
        path.write_text(json.dumps({"meta": {"method": method, "metric": "lm"}, "baseline": {"loss": 1.0, "ppl": 2.7},
                                    "records": []}))
        return path

    monkeypatch.setattr(li, "layers_main", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("{}")  # a Hugging Face directory, as far as the command line looks
    (tmp_path / "t.txt").write_text("text\n")
    assert main(["layers", str(tmp_path), "--method", "greedy", "--text", "t.txt", "--cache-mb", "3"]) == 0
    assert seen["cache_bytes"] == 3 << 20
    assert main(["layers", str(tmp_path), "--method", "greedy", "--text", "t.txt"]) == 0
    assert seen["cache_bytes"] == 1024 << 20


def test_greedy_step_under_a_tight_cache_runs_no_block_twice(models):
    """A greedy step's trie is a chain of branch points (run block i, or delete it): each lets its
    activation go when its last child takes it, so a cache of two activations is enough for every
    branch point, and no block is recomputed; with no cache at all the results are the same."""
    m = models["llama"]
    v = respaths.view(m)
    data = batches(padded=False)
    L = len(v)
    plans = [delete_blocks(L, [1, i]) for i in range(L) if i != 1]  # step 2 after removing block 1
    calls = []
    hooks = [layer.register_forward_hook(lambda *a: calls.append(1)) for layer in m.model.layers]
    try:
        x = v.stem(data[0]["input_ids"])
        room = x.numel() * x.element_size()  # one activation of the larger batch
        tight = evaluate_plans(v, data, plans, metric=metrics.LMLoss(), engine=EngineOptions(cache_bytes=room))
        ran = len(calls) - L  # less the one probe forward that checks for in-place blocks
        calls.clear()
        none = evaluate_plans(v, data, plans, metric=metrics.LMLoss(), engine=EngineOptions(cache_bytes=0))
    finally:
        for h in hooks:
            h.remove()
    from respaths.engine import trie_cost
    assert ran == trie_cost(plans, runs_only=True)[0] * len(data)
    assert len(calls) - L > ran  # without a cache, branch points are recomputed
    for a, b in zip(tight, none):
        assert a["loss"] == b["loss"]
