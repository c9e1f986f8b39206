"""Which layers of a transformer matter: the lesion question, asked the way the 2024 papers ask it.

Metrics of a plan (a model with blocks deleted, repeated, reordered or run in parallel) live in
respaths.metrics (LMLoss, EmbeddingCosine, ClassifierError). Every sweep below
scores its plans through the lesion engine (respaths.engine.evaluate_plans with the metric), all
plans of a sweep in one trie, so that plans that start alike share those blocks' computation.

Methods, each equal to a naive computation (tests/layers/test_importance.py):
  block_influence     ShortGPT (Men et al. 2024): BI_i = 1 - cos(x_i, x_{i+1}) averaged over tokens,
                      x_i the input of block i; the least influential blocks are removed first.
  angular_distances   Gromov et al. 2024: d(l, l+n) = arccos(cos(x_l, x_{l+n})) / pi of the last
                      token, averaged over sequences; remove the n blocks l*..l*+n-1 with the
                      smallest d(l, l+n).
  greedy_pruning      repeatedly remove the block whose deletion costs least by the metric,
                      compared with removing blocks in Block-Influence order and in random order.
  painters_plan       "Transformer Layers as Painters" (Sun et al. 2024) on k middle blocks: skip,
                      repeat (the centre block k times), reverse, random order, parallel (run on the
                      same input, outputs averaged) and looped parallel (the parallel step repeated).

`run_layers` runs one method end to end into a ResultStore (the `respaths layers` command).
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import DELETE, PARALLEL, RUN, Plan, ResidualView, UserError, delete_blocks, full_plan
from ..engine.options import DEFAULT_CACHE_BYTES, EngineOptions
from ..engine.trie import evaluate_plans
from ..experiments.lesion import Spec, plan_bar
from ..metrics import Batch, Metric, PlanResult, inputs_of, metric_for, model_device, to_device, valid_tokens
from ..io.layout import layers_prefix
from ..io.results import ResultStore
from ..opening import open_model
from ..drawing import save
from .figures import plot

# ---------------------------------------------------------------------------------------------
# Scores from one pass of the full model: x_0 (the stem's output) .. x_L (the last block's output)


@torch.no_grad()
def block_influence(view: ResidualView, batches: Sequence[Batch]) -> list[float]:
    """ShortGPT's Block Influence of each block: 1 - cos(input, output), averaged over all real tokens."""
    device = model_device(view)
    total = torch.zeros(len(view), dtype=torch.float64)
    n = 0
    for b in batches:
        b = to_device(b, device)
        x = view.stem(inputs_of(b))
        ok = valid_tokens(b, x)
        for i, block in enumerate(view.blocks):
            y = block(x)
            total[i] += float((1 - F.cosine_similarity(x.float(), y.float(), dim=-1))[ok].double().sum())
            x = y
        n += int(ok.sum())
    return (total / n).tolist()


def readout_index(batch: Batch, x: Tensor, token: str) -> Tensor:
    """[B] position of each sequence's last real token ("last") or its first token ("first")."""
    if token == "first":
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    ok = valid_tokens(batch, x).long()
    pos = torch.arange(x.shape[1], device=x.device)
    return (ok * (pos + 1)).argmax(1)  # the largest position whose token is real


@torch.no_grad()
def angular_distances(view: ResidualView, batches: Sequence[Batch], token: str = "last") -> Tensor:
    """D[l, m] = arccos(cos(x_l, x_m)) / pi of the readout token, averaged over sequences, for
    0 <= l <= m <= L (x_l the input of block l, x_L the last block's output)."""
    device = model_device(view)
    L = len(view)
    total = torch.zeros(L + 1, L + 1, dtype=torch.float64)
    n = 0
    for b in batches:
        b = to_device(b, device)
        x = view.stem(inputs_of(b))
        idx = readout_index(b, x, token)
        rows = torch.arange(len(idx), device=idx.device)
        read = [x[rows, idx]]
        for block in view.blocks:
            x = block(x)
            read.append(x[rows, idx])
        unit = F.normalize(torch.stack(read).double(), dim=-1)  # [L+1, B, D]
        # the angle as 2 atan2(|u - v|, |u + v|): arccos(u.v) loses digits when the angle is small
        for l in range(L + 1):
            diff, summ = (unit[l] - unit).norm(dim=-1), (unit[l] + unit).norm(dim=-1)  # [L+1, B]
            total[l] += (2 * torch.atan2(diff, summ) / math.pi).sum(-1).cpu()
        n += len(idx)
    return (total / n).triu()


def best_span(distances: Tensor, n: int) -> int:
    """Gromov et al.'s choice of which n consecutive blocks to remove: l* = argmin_l d(l, l + n)."""
    L = distances.shape[0] - 1
    if not 1 <= n <= L:
        raise UserError(f"cannot remove {n} consecutive blocks of {L}.")
    return int(torch.stack([distances[l, l + n] for l in range(L - n + 1)]).argmin())


# ---------------------------------------------------------------------------------------------
# Pruning orders


def engine_evaluator(view: ResidualView, batches: Sequence[Batch], metric: Metric,
                     engine: EngineOptions = EngineOptions()) -> Callable[[Sequence[Plan]], list[PlanResult]]:
    """evaluate(plans) -> one result per plan: all of them in one trie over the batches (respaths.engine),
    each result with the plan's share of the time."""
    return lambda plans: evaluate_plans(view, batches, plans, metric=metric, device=model_device(view),
                                        engine=engine)


def per_candidate_evaluator(view: ResidualView, batches: Sequence[Batch],
                            metric: Metric) -> Callable[[Sequence[Plan]], list[PlanResult]]:
    """evaluate(plans) -> one result per plan: each plan run on its own over all the batches,
    metric(view, batches, plan), the way SLEB, BlockPruner and FinerCut score their candidates."""
    return lambda plans: [metric(view, batches, p) for p in plans]


def greedy_pruning(view: ResidualView, batches: Sequence[Batch], metric: Metric, steps: int | None = None,
                   evaluate: Callable[[Sequence[Plan]], list[PlanResult]] | None = None) -> list[dict[str, Any]]:
    """Remove one block at a time, each time the one whose removal gives the lowest metric cost
    (SLEB's protocol, with the metric's cost in place of perplexity).

    Returns one entry per step: {"k", "removed" (in order of removal), "block", "result"}.
    `evaluate(plans)` scores all candidates of a step at once; by default one engine call, so the
    candidates form one trie: "remove block i" shares blocks 0..i-1 with every later candidate,
    about half the block evaluations of scoring each candidate alone (per_candidate_evaluator).
    Ties go to the lower index: the minimum of (cost, index). In float32 the engine computes the
    same activations as running each plan alone, so both ways pick the same blocks
    (tests/layers/test_sweeps.py); only a tie closer than rounding could go either way, and then
    the lower index wins in both."""
    evaluate = evaluate or engine_evaluator(view, batches, metric)
    L = len(view)
    candidates = view.deletable
    steps = len(candidates) - 1 if steps is None else min(steps, len(candidates))
    removed: list[int] = []
    out = []
    for k in range(1, steps + 1):
        tried = [i for i in candidates if i not in removed]
        results = evaluate([delete_blocks(L, removed + [i], f"greedy {k}: try {i}") for i in tried])
        cost, i, r = min(((metric.cost(r), i, r) for i, r in zip(tried, results)), key=lambda t: (t[0], t[1]))
        removed.append(i)
        out.append({"k": k, "removed": list(removed), "block": i, "result": r})
    return out


def random_order(n_blocks: int, seed: int, candidates: Sequence[int] | None = None) -> list[int]:
    cands = list(range(n_blocks)) if candidates is None else list(candidates)
    g = torch.Generator().manual_seed(seed)
    return [cands[j] for j in torch.randperm(len(cands), generator=g).tolist()]


def influence_order(influence: Sequence[float]) -> list[int]:
    """Blocks from least to most influential (ties: lower index first)."""
    return sorted(range(len(influence)), key=lambda i: (influence[i], i))


# ---------------------------------------------------------------------------------------------
# "Transformer Layers as Painters": what happens to the middle blocks


def middle_span(n_blocks: int, k: int) -> list[int]:
    """The k blocks in the middle; the first and the last block always stay in place."""
    if not 1 <= k <= n_blocks - 2:
        raise UserError(f"a middle span of {k} blocks does not fit in {n_blocks} blocks with the first and "
                        f"last kept; use 1..{n_blocks - 2}.")
    start = (n_blocks - k) // 2
    return list(range(start, start + k))


def painters_plan(n_blocks: int, k: int, variant: str, seed: int = 0, loops: int | None = None) -> Plan:
    """The plan that treats the k middle blocks as `variant` says; all other blocks run in order.

    skip: the span deleted; repeat: the span replaced by its centre block run k times; reverse;
    random: a random permutation (seeded); parallel: one step running the span on the same input
    and averaging; looped: that parallel step repeated `loops` times (default k, the compute of
    the original span)."""
    span = middle_span(n_blocks, k)
    if variant not in PAINTER_STEPS:
        raise UserError(f"unknown painters variant {variant!r}; use one of {', '.join(PAINTERS)}.")
    before = [(RUN, i) for i in range(span[0])]
    after = [(RUN, i) for i in range(span[-1] + 1, n_blocks)]
    mid = PAINTER_STEPS[variant](span, n_blocks, seed, loops)
    label = f"{variant} {k} middle" + (f" (seed {seed})" if variant == "random" else "")
    return Plan(tuple(before + mid + after), label=label)


# variant -> the steps that take the middle span's place: f(span, n_blocks, seed, loops)
PAINTER_STEPS: dict[str, Callable[[list[int], int, int, int | None], list]] = {
    "skip": lambda span, n, seed, loops: [(DELETE, i) for i in span],
    "repeat": lambda span, n, seed, loops: [(RUN, span[len(span) // 2])] * len(span),
    "reverse": lambda span, n, seed, loops: [(RUN, i) for i in reversed(span)],
    "random": lambda span, n, seed, loops: [(RUN, i) for i in random_order(n, seed, span)],
    "parallel": lambda span, n, seed, loops: [(PARALLEL, tuple(span))],
    "looped": lambda span, n, seed, loops: [(PARALLEL, tuple(span))] * (len(span) if loops is None else loops),
}
PAINTERS = tuple(PAINTER_STEPS)


# ---------------------------------------------------------------------------------------------
# One method end to end, into a ResultStore
#
# Records follow the lesion schema (respaths.experiments.lesion): key, kind, k, sample, deleted, order, plan,
# n, the metric's fields (loss and ppl | cos | error, accuracy and loss), seconds. Keys:
#   baseline                        the full model
#   influence block=I               Block Influence of block I (fields block, name, influence)
#   influence-order k=K             the K least influential blocks deleted
#   random-order k=K s=S            the first K blocks of random order S deleted
#   greedy-try k=K removed=A+B+C    greedy step K trying C after A, B
#   greedy k=K                      the K blocks greedy pruning chose (removed_order: in order)
#   angular n=N l=L                 angular distance d(L, L+N) (fields n, l, distance)
#   angular-prune n=N               the N consecutive blocks at the best l deleted
#   painters VARIANT k=K [s=S]      VARIANT applied to the K middle blocks (field span)

def plan_record(spec: Spec, result: dict[str, Any], seconds: float) -> dict:
    """The record of a spec (its record's key and kind, k and sample, 0 if not given, then its other
    fields) with the plan, its result and its time."""
    plan, fields = spec.plan, spec.record
    extra = {f: v for f, v in fields.items() if f not in ("key", "kind", "k", "sample")}
    return {"key": spec.key, "kind": fields["kind"], "k": fields.get("k", 0), "sample": fields.get("sample", 0),
            "deleted": plan.deleted, "order": [list(i) if isinstance(i, tuple) else i for i in plan.order],
            "plan": plan.key(), "label": plan.label, **extra, **result, "seconds": seconds}


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class Runner:
    """Evaluates each distinct plan once (memoised by plan key, across resumes too) into a ResultStore;
    the plans of one call that are new run together, as one trie (respaths.engine)."""

    def __init__(self, view: ResidualView, batches: Sequence[Batch], metric: Metric, store: Any,
                 progress: bool = True, engine: EngineOptions = EngineOptions(), total: int | None = None,
                 desc: str = "plans"):
        self.view, self.batches, self.metric, self.store = view, batches, metric, store
        self.engine = engine
        self.memo = {r["plan"]: r for r in store.records if "plan" in r}
        # total: the plans the method asks for (planned_plans); one already saved counts as done at once
        self.bar = plan_bar(total, 0, desc, progress)
        self.asked = 0

    def saved(self, key: str, plan: Plan) -> dict | None:
        return self.store.get(key) or self.memo.get(plan.key())

    def evaluate_all(self, specs: Sequence[Spec]) -> list[PlanResult]:
        """Each spec (its record: key, kind and fields): the metric's result for its plan, appended to
        the store under its key (in the specs' order) unless already there."""
        new = {sp.plan.key(): sp.plan for sp in specs if self.saved(sp.key, sp.plan) is None}
        fresh = {}
        if new:
            results = evaluate_plans(self.view, self.batches, list(new.values()), metric=self.metric,
                                     device=model_device(self.view), engine=self.engine,
                                     advance=lambda share: self.bar.update(share * len(new)))
            fresh = dict(zip(new, results))
        self.asked += len(specs)
        self.bar.n = self.asked  # exact again after the batches' shares, saved plans included
        self.bar.refresh()
        out = []
        for sp in specs:
            old = self.saved(sp.key, sp.plan)
            if old is not None:
                result = PlanResult(sp.plan, {f: old[f] for f in self.metric.fields if f in old}, old["seconds"])
            else:
                result = fresh[sp.plan.key()]
            if not self.store.done(sp.key):
                self.store.append(plan_record(sp, result.numbers, result.seconds))
                self.memo.setdefault(sp.plan.key(), self.store.get(sp.key))
            out.append(result)
        return out

    def evaluate(self, key: str, kind: str, plan: Plan, **fields: Any) -> PlanResult:
        return self.evaluate_all([Spec({"key": key, "kind": kind, **fields}, plan)])[0]

    def note(self, key: str, kind: str, **fields: Any) -> None:
        """A record that is a score, not a plan (a block's influence, an angular distance)."""
        if not self.store.done(key):
            self.store.append({"key": key, "kind": kind, **fields})


def _pruning_curves(run: Runner, keys: list[str], last: int, random_orders: int = 0) -> None:
    """Block Influence of every block, then the blocks removed in influence order (and in
    `random_orders` seeded random orders), k = 1..last, as one sweep."""
    view, L = run.view, len(run.view)
    bi = block_influence(view, run.batches)
    for i, v in enumerate(bi):
        keys.append(f"influence block={i}")
        run.note(keys[-1], "influence", block=i, name=view.blocks[i].name, influence=v)
    orders = [("influence-order", "", 0, influence_order(bi))]
    orders += [("random-order", f" s={s}", s, random_order(L, s)) for s in range(random_orders)]
    curves = []
    for kind, suffix, s, seq in orders:
        for k in range(1, last + 1):
            keys.append(f"{kind} k={k}{suffix}")
            curves.append(Spec({"key": keys[-1], "kind": kind, "k": k, "sample": s},
                               delete_blocks(L, seq[:k], f"{kind} {k}{suffix}")))
    run.evaluate_all(curves)


def sweep_influence(run: Runner, keys: list[str], last: int, **options: Any) -> None:
    """ShortGPT: the least influential blocks removed first."""
    _pruning_curves(run, keys, last)


def sweep_greedy(run: Runner, keys: list[str], last: int, *, seeds: int, **options: Any) -> None:
    """Greedy pruning, beside the influence order and `seeds` random orders."""
    L = len(run.view)
    _pruning_curves(run, keys, last, random_orders=seeds)

    def evaluate(plans: Sequence[Plan]) -> list[PlanResult]:
        items = []
        for plan in plans:
            removed = [i for op, i in plan.steps if op == DELETE]
            items.append(Spec({"key": f"greedy-try k={len(removed)} removed={'+'.join(map(str, removed))}",
                               "kind": "greedy-try", "k": len(removed)}, plan))
        return run.evaluate_all(items)

    for step in greedy_pruning(run.view, run.batches, run.metric, last, evaluate):
        keys.append(f"greedy k={step['k']}")
        run.evaluate(keys[-1], "greedy", delete_blocks(L, step["removed"], f"greedy {step['k']}"), k=step["k"],
                     removed_order=step["removed"])


def sweep_angular(run: Runner, keys: list[str], last: int, *, token: str, **options: Any) -> None:
    """Gromov et al.: every angular distance d(l, l+n), and the n blocks after the best l removed."""
    L = len(run.view)
    d = angular_distances(run.view, run.batches, token)
    prunes = []
    for n in range(1, last + 1):
        for l in range(L - n + 1):
            keys.append(f"angular n={n} l={l}")
            run.note(keys[-1], "angular", n=n, l=l, distance=float(d[l, l + n]))
        l = best_span(d, n)
        keys.append(f"angular-prune n={n}")
        prunes.append(Spec({"key": keys[-1], "kind": "angular-prune", "k": n, "l": l, "distance": float(d[l, l + n])},
                           delete_blocks(L, range(l, l + n), f"angular: delete {l}..{l + n - 1}")))
    run.evaluate_all(prunes)


def sweep_painters(run: Runner, keys: list[str], last: int, *, spans: Sequence[int] | None,
                   variants: Sequence[str], seeds: int, loops: int | None, **options: Any) -> None:
    """Each painters variant on each middle span (random: `seeds` permutations)."""
    L = len(run.view)
    variants_run = []
    for k in spans or range(1, L - 1):
        for variant in variants:
            for s in range(seeds if variant == "random" else 1):
                keys.append(f"painters {variant} k={k}" + (f" s={s}" if variant == "random" else ""))
                variants_run.append(Spec({"key": keys[-1], "kind": f"painters-{variant}", "k": k, "sample": s,
                                          "variant": variant, "span": middle_span(L, k)},
                                         painters_plan(L, k, variant, s, loops)))
    run.evaluate_all(variants_run)


# method name -> its sweep(run, keys, last, **options): appends its record keys, in file order
SWEEPS: dict[str, Callable[..., None]] = {"influence": sweep_influence, "angular": sweep_angular,
                                           "greedy": sweep_greedy, "painters": sweep_painters}
METHODS = tuple(SWEEPS)


def planned_plans(method: str, view: ResidualView, last: int, seeds: int = 3, spans: Sequence[int] | None = None,
                  variants: Sequence[str] = PAINTERS) -> int:
    """How many plans the method's sweep asks the Runner for (the baseline not counted): its bar's total."""
    L = len(view)
    if method in ("influence", "angular"):
        return last
    if method == "greedy":  # the pruning curves, each greedy step's candidates, and each step's choice again
        candidates = len(view.deletable)
        greedy = min(last, candidates)
        return (1 + seeds) * last + sum(candidates - k for k in range(greedy)) + greedy
    return sum(seeds if v == "random" else 1 for _ in (spans or range(1, L - 1)) for v in variants)


def run_layers(view: ResidualView, batches: Sequence[Batch], method: str, store: Any, *, metric: Any = None,
               steps: int | None = None, seeds: int = 3, spans: Sequence[int] | None = None,
               variants: Sequence[str] = PAINTERS, loops: int | None = None, token: str = "last",
               engine: EngineOptions = EngineOptions(), progress: bool = True) -> Path:
    """Run one method (influence | angular | greedy | painters) into the store and finish it.

    Every sweep is one engine call: the pruning curves (all k of all orders), each greedy step's
    candidates, the angular spans, the painters variants; engine.cache_bytes bounds the activations
    kept at the trie's branch points."""
    if method not in SWEEPS:
        raise UserError(f"unknown method {method!r}; use one of {', '.join(METHODS)}.")
    metric = metric or metric_for(view, batches)
    L = len(view)
    last = L - 1 if steps is None else max(0, min(steps, L - 1))
    total = 1 + planned_plans(method, view, last, seeds, spans, variants)
    saved = sum("plan" in r for r in store.records)
    if saved:
        print(f"[respaths] layers --method {method}: {saved}/{total} plans already done in {store.prefix}, kept",
              file=sys.stderr, flush=True)
    run = Runner(view, batches, metric, store, progress, engine, total=total, desc=f"layers --method {method}")
    keys = ["baseline"]
    run.evaluate("baseline", "baseline", full_plan(L))
    SWEEPS[method](run, keys, last, seeds=seeds, spans=spans, variants=variants, loops=loops, token=token)
    run.bar.close()
    base = store.get("baseline")
    return store.finish(keys, metric=metric.name, baseline={f: base[f] for f in metric.fields if f in base})


def layers_main(model_path: str, method: str, *, text: str | None, out: str | None = None, split: str = "layer",
                seq_len: int = 128, batch_size: int = 8, limit: int | None = None, steps: int | None = None,
                seeds: int = 3, spans: Sequence[int] | None = None, variants: Sequence[str] = PAINTERS,
                loops: int | None = None, token: str = "last", device: str = "cpu", force: bool = False,
                figure: bool = True, progress: bool = True, cache_bytes: int = DEFAULT_CACHE_BYTES) -> Path:
    """`respaths layers`: load a Hugging Face model directory, read the text, run the method (exact, in
    float32; cache_bytes bounds the engine's branch-point cache)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; use one of {', '.join(METHODS)}.")
    bad = [v for v in variants if v not in PAINTERS]
    if bad:
        raise UserError(f"unknown painters variant {bad[0]!r}; use some of {', '.join(PAINTERS)}.")
    opened = open_model(model_path, text=text, seq_len=seq_len, batch_size=batch_size, limit=limit, device=device,
                        split_blocks=split)
    model, v, batches = opened.model, opened.view, opened.data
    if method == "painters":
        for k in spans or []:
            middle_span(len(v), k)  # a bad span is an error before any file is written
    metric = metric_for(v, batches)
    meta = {"command": "layers", "method": method, "model": str(Path(model_path).resolve()),
            "model_class": type(model).__name__, "split": split, "blocks": len(v),
            "block_names": [b.name for b in v.blocks], "metric": metric.name,
            "text": {"path": str(Path(text).resolve()), "sha256": file_digest(text)},
            "seq_len": seq_len, "batch_size": batch_size, "limit": limit, "steps": steps, "seeds": seeds,
            "spans": list(spans) if spans else None, "variants": list(variants), "loops": loops, "token": token,
            "dtype": "float32", "fingerprint": opened.description["fingerprint"],
            "source": opened.description["source"]}  # a GGUF file's sha256 and quantisation type
    store = ResultStore(out or layers_prefix(method), meta, force=force, required=("kind",))
    path = run_layers(v, batches, method, store, metric=metric, steps=steps, seeds=seeds, spans=spans,
                      variants=variants, loops=loops, token=token,
                      engine=EngineOptions(cache_bytes=cache_bytes), progress=progress)
    if figure:
        save(plot(json.loads(path.read_text())), path.with_suffix(""))  # PREFIX.png and PREFIX.svg
    return path
