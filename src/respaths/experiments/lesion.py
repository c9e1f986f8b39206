"""The lesion study of Veit et al. 2016: delete or reorder blocks at test time and measure the error.

  lesion_single(view, data)           the baseline and every deletable block deleted alone (fig. 3);
  lesion_random(view, data, k, S)     S random sets of k deleted blocks for each k (fig. 5a);
  reorder(view, data, k, S)           k random pairs of compatible blocks swapped, S times for each k,
                                      with the Kendall tau of the resulting order (fig. 5b).

Each builds a set of specs (Spec: a plan and the fields its record starts with), evaluates their
plans with the engine in chunks (plans sharing prefixes go together; engine=EngineOptions(...) for
its speed tricks) and, with out=DIR/NAME, appends one record per plan to a ResultStore as each chunk
finishes, so that a killed run resumes where it stopped. The baseline runs in every chunk (it
costs little: its steps are the trie's spine) so each plan is compared with it image by image.

Record fields (one per plan; see also docs/result-files.md):
  key          "baseline", "single 17", "random k=3 s=12", "reorder k=2 s=4": unique in the file
  kind, k, sample   experiment, number of deleted blocks / swapped pairs, sample index
  deleted      indices of the deleted blocks;  order: block order run (reorder only)
  swaps        the swapped pairs, in the order applied;  kendall_tau: of order vs 0..n-1 (reorder)
  plan         the plan's key, 'r0 r1 d2 r3 ...'
  n, errors, error, error_ci   images, wrong ones, error rate and its 95% Wilson interval
  loss         mean cross-entropy
  delta, delta_ci, mcnemar_p   error - baseline error, its 95% paired bootstrap interval, and the
                               exact McNemar p-value;  newly_wrong / newly_right: discordant images
  seconds      the plan's share of the engine's wall time (the only field that varies between runs)

With a metric (respaths.metrics: LMLoss, EmbeddingCosine, ClassifierError; chosen by metric_for when
the data is a list of dict batches, as `open_model` returns for a Hugging Face model and --text),
a record holds the metric's numbers instead of the classifier's:
  n            tokens predicted (lm) or examples (cosine, classifier)
  loss, ppl    lm: mean next-token cross-entropy and its perplexity
  cos          cosine: mean cosine of each example's mean-pooled output to the full model's
  error, accuracy, loss   classifier
  delta        the metric's main number (loss, cos or error) minus the baseline's
and the file's meta says "metric": its name. No per-example correctness is kept on this path, so
there are no paired statistics (Wilson interval, bootstrap, McNemar).
"""
from __future__ import annotations

import copy
import itertools
import math
import random
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from scipy import stats as scipy_stats
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..adapters import view as make_view
from ..core import PARALLEL, RUN, Op, Plan, ResidualView, UserError, delete_blocks, full_plan, reorder_blocks
from ..engine.options import EngineOptions
from ..engine.trie import evaluate_plans
from ..engine.batching import batch_length, count_examples, first_examples, iterate_batches
from ..metrics import ClassifierError, Metric, PlanResult, inputs_of, metric_for, metric_named, to_device
from ..prune import Skipped, own_post
from ..io.results import ResultStore

DEFAULT_CHUNK = 64


# ---------------------------------------------------------------------------------------------
# The plans of each experiment

@dataclass(frozen=True)
class Spec:
    """One plan of an experiment and the fields its record starts with (key, kind, k, sample, deleted,
    and swaps, order, kendall_tau for a reordering; see the module docstring)."""

    record: dict[str, Any]
    plan: Plan

    @property
    def key(self) -> str:
        """Unique within an experiment: "baseline", "single 17", "random k=3 s=12", ..."""
        return self.record["key"]


def parse_k(k: int | str | Iterable[int]) -> list[int]:
    """'1-20' -> [1..20], '1,2,5' -> [1, 2, 5], 3 -> [3]."""
    if isinstance(k, int):
        return [k]
    if isinstance(k, str):
        out: list[int] = []
        for part in k.split(","):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if not m or (m[2] is not None and int(m[2]) < int(m[1])):
                raise UserError(f"cannot read k={k!r}; write a rising range like 1-20 or a list like 1,2,5.")
            out += list(range(int(m[1]), int(m[2]) + 1)) if m[2] is not None else [int(m[1])]
        return out
    return [int(x) for x in k]


def single_plans(view: ResidualView) -> list[Spec]:
    n = len(view)
    return [Spec({"key": f"single {i}", "kind": "single", "k": 1, "sample": 0, "deleted": [i]},
                 delete_blocks(n, [i], label=f"delete {i}")) for i in view.deletable]


def distinct_draws(draw: Callable[[str], Any], samples: int, exist: int | None, key: Callable[[Any], Any]
                   ) -> list[Any]:
    """Up to `samples` configurations that differ by key(configuration), for one k.

    Sample s is draw(f"{s}"): what (seed, k, s) alone gives, as before; only where that repeats an
    earlier sample of the same k is it drawn again (draw(f"{s}/1"), ...). A mean with an interval over
    repeated draws of one configuration would count one sample twice. Where fewer than `samples`
    configurations exist (`exist`), all of them are drawn."""
    want = samples if exist is None else min(samples, exist)
    seen: set = set()
    out = []
    for s in range(want):
        for attempt in range(100_000):
            config = draw(f"{s}" if attempt == 0 else f"{s}/{attempt}")
            if key(config) not in seen:
                break
        else:  # exist is None (too many to count) and still no new one: there are no more to find
            break
        seen.add(key(config))
        out.append(config)
    return out


def random_plans(view: ResidualView, ks: Sequence[int], samples: int, seed: int) -> list[Spec]:
    """Distinct random sets of k deleted blocks; set s depends only on (seed, k, s) unless that repeated
    an earlier set of the same k, so adding k values or samples keeps earlier ones."""
    pool = view.deletable
    bad = [k for k in ks if not 1 <= k <= len(pool)]
    if bad:
        raise UserError(f"cannot delete {bad[0]} blocks: this model has {len(pool)} deletable blocks; "
                        f"choose k between 1 and {len(pool)}.")
    out = []
    for k in ks:
        sets = distinct_draws(lambda s: sorted(random.Random(f"{seed}/delete/{k}/{s}").sample(pool, k)), samples,
                              math.comb(len(pool), k), tuple)
        for s, gone in enumerate(sets):
            out.append(Spec({"key": f"random k={k} s={s}", "kind": "random", "k": k, "sample": s, "deleted": gone},
                            delete_blocks(len(view), gone, label=f"delete {gone}")))
    return out


ORDERS_COUNTED = 200_000  # swap sequences enumerated to count the distinct orders of k swaps exactly


def swapped_order(n: int, swaps: Sequence[tuple[int, int]]) -> list[int]:
    """The block order after swapping each pair of blocks in turn (pairs name blocks, not positions)."""
    order = list(range(n))
    for a, b in swaps:
        pa, pb = order.index(a), order.index(b)
        order[pa], order[pb] = order[pb], order[pa]
    return order


def distinct_orders(n: int, pairs: Sequence[tuple[int, int]], k: int) -> int | None:
    """How many different block orders k swaps of distinct pairs give (two swap sequences can give one
    order); None where there are more than ORDERS_COUNTED sequences to try, i.e. far more than any
    number of samples."""
    if math.perm(len(pairs), k) > ORDERS_COUNTED:
        return None
    return len({tuple(swapped_order(n, seq)) for seq in itertools.permutations(pairs, k)})


def reorder_plans(view: ResidualView, ks: Sequence[int], samples: int, seed: int) -> list[Spec]:
    """Swap k distinct random pairs of compatible blocks (view.swappable_pairs: never across a shape
    change); the samples of one k give distinct orders (see distinct_draws)."""
    pairs = view.swappable_pairs()
    bad = [k for k in ks if not 1 <= k <= len(pairs)]
    if bad:
        raise UserError(f"cannot swap {bad[0]} pairs: this model has {len(pairs)} pairs of blocks with "
                        f"compatible shapes; choose k between 1 and {len(pairs)}.")
    n = len(view)
    out = []
    for k in ks:
        drawn = distinct_draws(lambda s: random.Random(f"{seed}/reorder/{k}/{s}").sample(pairs, k), samples,
                               distinct_orders(n, pairs, k), lambda swaps: tuple(swapped_order(n, swaps)))
        for s, swaps in enumerate(drawn):
            order = swapped_order(n, swaps)
            tau = float(scipy_stats.kendalltau(range(n), order).statistic)
            out.append(Spec({"key": f"reorder k={k} s={s}", "kind": "reorder", "k": k, "sample": s, "deleted": [],
                             "swaps": [list(p) for p in swaps], "order": order, "kendall_tau": tau},
                            reorder_blocks(order, label=f"swap {swaps}")))
    return out


def configurations(specs: list[Spec], ks: Sequence[int], samples: int, exist: Callable[[int], int | None]
                   ) -> list[dict[str, Any]]:
    """What the result meta records per k: the configurations asked for, those that exist (None: too
    many to count) and those drawn, so a reader sees where all of them were used."""
    drawn = {k: sum(1 for sp in specs if sp.record["k"] == k) for k in ks}
    return [{"k": k, "asked": samples, "exist": exist(k), "drawn": drawn[k]} for k in ks]


# ---------------------------------------------------------------------------------------------
# Running an experiment

def describe(view: ResidualView, data: Any, n_images: int) -> dict[str, Any]:
    """What is being evaluated, for the result file's meta."""
    return {
        "model": {"name": view.name, "adapter": view.adapter, "blocks": len(view)},
        "dataset": {"name": getattr(data, "name", type(data).__name__), "n_images": n_images},
        "blocks": view.info(),
    }


def is_dict_batches(data: Any) -> bool:
    return isinstance(data, (list, tuple)) and bool(data) and all(isinstance(b, dict) for b in data)


def choose_metric(view: ResidualView, data: Any, metric: Metric | str | None) -> Metric | None:
    """The metric an experiment is scored by: the one given (an object or its name), the one that fits
    the view and the batches when data is a list of dict batches, or None (the classifier path, with
    per-example correctness and paired statistics)."""
    if isinstance(metric, str):
        return metric_named(metric)
    if metric is None and is_dict_batches(data):
        return metric_for(view, data)
    return metric


def run_experiment(view: ResidualView, data: Any, experiment: str, specs: list[Spec],
                   params: dict[str, Any], *, out: str | None = None, meta: dict[str, Any] | None = None,
                   force: bool = False, batch_size: int = 256, device: Any = None,
                   engine: EngineOptions = EngineOptions(), chunk: int = DEFAULT_CHUNK,
                   progress: bool = False, seed: int = 0, metric: Metric | str | None = None,
                   desc: str | None = None) -> list[dict[str, Any]]:
    """Evaluate the baseline and the specs' plans; records in spec order (baseline first).

    progress: one bar for the whole experiment, named desc (default: the experiment's name), over
    all its plans, those an earlier run finished counted as done; a resumed run also says how many
    of them it kept.

    The plans not done yet, sorted by their steps (plans sharing a prefix share a trie), are evaluated
    `chunk` at a time with the baseline beside each chunk, and each chunk's records are appended to
    the ResultStore at out as it finishes. Under torchrun (respaths.distributed; all of it is a no-op
    in one process) those plans are first cut into one contiguous run per rank of about equal trie
    cost (plan_costs), so plans sharing a prefix mostly stay on one rank; in each round every rank
    evaluates a chunk of its own and rank 0 appends the records all ranks computed, so the file is
    the one a single process writes (only "seconds" differs) and a killed run resumes on any number.

    engine: the engine's speed tricks and cache bound (respaths.engine.EngineOptions; exact by default).
    metric: see the module docstring; None with image data keeps the classifier records."""
    metric = choose_metric(view, data, metric)
    ranks = distributed.init()  # 1 outside torchrun; under it, rank 0 alone opens and writes the file
    if metric is not None and ranks > 1:
        raise UserError("lesion and reorder with a metric (a Hugging Face model with --text) run in one process; "
                        "run them without torchrun.")
    full = experiment_meta(view, data, experiment, params, meta, metric)
    base_spec, specs, keys = with_baseline(view, specs)
    store = distributed.on_main(lambda: checked(ResultStore(out, full, force=force), specs, metric)) if out else None
    if view.model is not None:  # one experiment: every rank evaluates the same weights
        distributed.check_same("model weights", view.model.state_dict().values())
    if metric is None:
        scoring: PairedRecords | MetricRecords = PairedRecords(seed)
    else:
        stored = store.get("baseline") if store is not None and store.done("baseline") else None
        scoring = MetricRecords(metric, distributed.broadcast(stored))

    pending = set(distributed.unfinished(store, keys))
    todo = sorted((sp for sp in specs[1:] if sp.key in pending), key=lambda sp: sp.plan.steps)
    runs = distributed.split(todo, plan_costs(base_spec.plan, todo))
    mine, chunk = runs[distributed.rank()], max(1, chunk)
    rounds = max(1, math.ceil(max(len(run) for run in runs) / chunk))  # at least one: the baseline's
    new_baseline = "baseline" in pending and distributed.is_main()  # rank 0 records it, in its first round
    position = {sp.key: i for i, sp in enumerate([base_spec] + todo)}
    where = f" on {ranks} ranks" if ranks > 1 else ""
    name = (desc or DESCRIPTIONS.get(experiment, experiment)) + where
    kept = len(keys) - len(pending)
    if kept and distributed.is_main():
        tqdm.write(f"[respaths] {name}: {kept}/{len(keys)} plans already done in {store.prefix}, kept", file=sys.stderr)
    bar = plan_bar(len(keys), kept, name, progress and distributed.is_main())
    records: dict[str, dict[str, Any]] = {}
    for r in range(rounds):
        group = mine[r * chunk:(r + 1) * chunk]
        with_base = [base_spec] if r == 0 and new_baseline else []

        def compute() -> list[dict[str, Any]]:
            if not group and not with_base:
                return []
            new = len(group) + len(with_base)  # the baseline beside a later chunk is no new plan
            results = evaluate_plans(view, data, [base_spec.plan] + [sp.plan for sp in group], metric=metric,
                                     batch_size=batch_size, device=device, engine=engine,
                                     advance=lambda share: bar.update(share * new))
            base = results[0]
            scoring.check_baseline(base)
            pairs = list(zip(with_base, results[:1])) + list(zip(group, results[1:]))
            return [scoring.record(sp.record, sp.plan, result, base) for sp, result in pairs]

        new = sorted((rec for part in distributed.gather(distributed.all_ok(compute)) for rec in part),
                     key=lambda rec: position[rec["key"]])
        for rec in new:
            records[rec["key"]] = rec
            if store is not None:  # rank 0
                store.append(rec)
        bar.n = kept + len(records)  # exact again after the chunk's shares (and the other ranks' plans)
        bar.refresh()
    bar.close()
    if not out:  # every rank holds every record
        return [records[k] for k in keys]

    def finish() -> list[dict[str, Any]]:
        store.finish(order=keys, baseline=scoring.summary(store.get("baseline")))
        return store.sorted_records(keys)

    return distributed.broadcast(distributed.on_main(finish))


# What a progress bar calls each experiment.
DESCRIPTIONS = {"lesion-single": "single deletion", "lesion-random": "random deletion", "reorder": "reordering"}


def plan_bar(total: int, done: int, desc: str, enabled: bool) -> Any:
    """A bar over plans, advanced by shares of a plan while a chunk runs; counts shown whole."""
    return tqdm(total=total, initial=done, desc=desc, unit="plan", dynamic_ncols=True, disable=not enabled,
                bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")


RECORD_FIELDS = ("kind", "k", "sample", "deleted", "plan", "n")


def checked(store: ResultStore, specs: Sequence[Spec], metric: Metric | None) -> ResultStore:
    """The store, once every record it reopened is one of these specs' (same key, same plan, every field):
    a damaged journal or result file, or one whose samples an earlier respaths drew with repeats, is
    refused before anything is computed or rewritten."""
    fields = RECORD_FIELDS + (("errors", "error", "error_ci", "loss") if metric is None
                              else (metric.field,))
    plans = {sp.key: sp.plan.key() for sp in specs}
    where = store.journal if store.journal.exists() else store.json_path
    for r in store.records:
        missing = [f for f in fields if f not in r]
        if r["key"] not in plans or missing:
            why = f"it lacks {missing[0]!r}" if r["key"] in plans else "this experiment has no such plan"
            raise UserError(f"the record {r['key']!r} in {where} is damaged ({why}); pass --force to start over, "
                            f"or delete the file.")
        if r["plan"] != plans[r["key"]]:
            raise UserError(f"the record {r['key']!r} in {where} measured another configuration than this respaths "
                            f"draws (earlier versions could draw one twice); pass --force to measure again.")
    return store


def experiment_meta(view: ResidualView, data: Any, experiment: str, params: dict[str, Any],
                    meta: dict[str, Any] | None, metric: Metric | None) -> dict[str, Any]:
    """The result file's meta: what is evaluated (model, data, metric) and the experiment's parameters."""
    if metric is None:
        n_images = count_examples(data)
        if n_images is None:  # an iterable of batches: count once
            n_images = sum(len(y) for _, y in data)
        if n_images == 0:
            raise UserError("the dataset has no images; check --data-dir and --limit.")
        return {"experiment": experiment, **describe(view, data, n_images), "params": params, **(meta or {})}
    if is_dict_batches(data):
        n_examples = sum(batch_length(b) for b in data)
        dataset = {"name": "text", "n_examples": n_examples, "batches": len(data)}
    else:
        n_examples = count_examples(data)
        if n_examples is None:
            n_examples = sum(len(y) for _, y in data)
        dataset = {"name": getattr(data, "name", type(data).__name__), "n_images": n_examples}
    if n_examples == 0:
        raise UserError("the data has no examples; check --text and --limit.")
    return {"experiment": experiment, **describe(view, data, n_examples), "dataset": dataset, "metric": metric.name,
            "chance": metric.chance(view), "params": params, **(meta or {})}


def with_baseline(view: ResidualView, specs: list[Spec]) -> tuple[Spec, list[Spec], list[str]]:
    """(the baseline spec, specs with the baseline first, their keys), each key checked to be unique."""
    base_spec = Spec({"key": "baseline", "kind": "baseline", "k": 0, "sample": 0, "deleted": []}, full_plan(len(view)))
    specs = [base_spec] + specs
    keys = [sp.key for sp in specs]
    if len(set(keys)) != len(keys):
        raise ValueError("every plan of an experiment needs its own key.")
    return base_spec, specs, keys


def plan_costs(baseline: Plan, todo: list[Spec]) -> list[float]:
    """What each plan adds to a trie of the plans before it (in todo's order) and the baseline, for
    cutting the plans into runs of equal work across ranks: the steps beyond the longest prefix it
    shares with the plan before it or the baseline, plus the head; a deleted block (its shortcut)
    counts half: cheap, but still a node of the walk."""
    def shared(a: tuple, b: tuple) -> int:
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    steps = [(), *(sp.plan.steps for sp in todo)]
    return [1 + sum(1 if op == RUN else 0.5 for op, _ in s[max(shared(s, before), shared(s, baseline.steps)):])
            for before, s in zip(steps, steps[1:])]


class PairedRecords:
    """The classifier's records: error and loss, with paired statistics against the baseline's
    answers image by image (ClassifierError.paired)."""

    def __init__(self, seed: int):
        self.seed, self.correct = seed, None

    def check_baseline(self, base: PlanResult) -> None:
        if self.correct is not None and not torch.equal(base.examples["correct"], self.correct):
            raise RuntimeError("the baseline gave different answers in two chunks; the model or data is not "
                               "deterministic, so paired statistics would be wrong.")
        self.correct = base.examples["correct"]

    def record(self, fields: dict[str, Any], plan: Plan, r: PlanResult, base: PlanResult) -> dict[str, Any]:
        return {**fields, "plan": plan.key(), **ClassifierError.paired(r, base, self.seed),
                "seconds": round(r.seconds, 6)}

    @staticmethod
    def summary(baseline: dict[str, Any]) -> dict[str, Any]:
        return {k: baseline[k] for k in ("n", "errors", "error", "error_ci", "loss")}


class MetricRecords:
    """A metric's records: its numbers, and the delta of its main number from the baseline's, checked
    against the baseline of every chunk and, when resuming, of the journal (stored)."""

    def __init__(self, metric: Metric, stored: dict[str, Any] | None):
        self.main = metric.field
        self.value = stored[self.main] if stored is not None else None

    def check_baseline(self, base: PlanResult) -> None:
        if self.value is not None and not math.isclose(base[self.main], self.value, rel_tol=1e-9, abs_tol=1e-12):
            raise RuntimeError("the baseline gave different numbers in two chunks; the model or data is not "
                               "deterministic, so the deltas would be wrong.")
        self.value = base[self.main]

    def record(self, fields: dict[str, Any], plan: Plan, r: PlanResult, base: PlanResult) -> dict[str, Any]:
        return {**fields, "plan": plan.key(), **r.numbers, "delta": r[self.main] - self.value,
                "seconds": round(r.seconds, 6)}

    @staticmethod
    def summary(baseline: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in baseline.items()
                if k not in ("key", "kind", "k", "sample", "deleted", "plan", "delta", "seconds")}


def probed(view: ResidualView, data: Any, device: Any) -> ResidualView:
    """The view, its blocks' input shapes found by running two examples through it where not known yet."""
    if any(b.in_shape is None for b in view.blocks):
        if is_dict_batches(data):
            x = first_examples(inputs_of(to_device(data[0], torch.device(device or "cpu"))), 2)
        else:
            x, _ = next(iter(iterate_batches(data, 2, torch.device(device or "cpu"))))
        with torch.inference_mode():
            view.probe(x)
    return view


def lesion_single(view: ResidualView, data: Any, **options: Any) -> list[dict[str, Any]]:
    """The baseline and each deletable block deleted alone. options: see run_experiment."""
    view = probed(view, data, options.get("device"))
    return run_experiment(view, data, "lesion-single", single_plans(view), {"mode": "single"}, **options)


def lesion_random(view: ResidualView, data: Any, k: Any = "1-20", samples: int = 10, seed: int = 0,
                  **options: Any) -> list[dict[str, Any]]:
    """samples random sets of k deleted blocks for each k."""
    view = probed(view, data, options.get("device"))
    ks = parse_k(k)
    specs = random_plans(view, ks, samples, seed)
    drawn = configurations(specs, ks, samples, lambda k: math.comb(len(view.deletable), k))
    return run_experiment(view, data, "lesion-random", specs,
                          {"mode": "random", "k": ks, "samples": samples, "seed": seed, "configurations": drawn},
                          seed=seed, **options)


def reorder(view: ResidualView, data: Any, k: Any = "1-20", samples: int = 10, seed: int = 0,
            **options: Any) -> list[dict[str, Any]]:
    """samples random reorderings by k swaps of compatible blocks for each k."""
    view = probed(view, data, options.get("device"))
    ks = parse_k(k)
    specs = reorder_plans(view, ks, samples, seed)
    pairs = view.swappable_pairs()
    drawn = configurations(specs, ks, samples, lambda k: distinct_orders(len(view), pairs, k))
    return run_experiment(view, data, "reorder", specs,
                          {"k": ks, "samples": samples, "seed": seed, "configurations": drawn}, seed=seed, **options)


# ---------------------------------------------------------------------------------------------
# The naive reference: the model itself, with blocks really removed or moved

def Deleted(block: Any) -> nn.Module:
    """Stands in for a deleted block: post(shortcut(x)), or x for a plain layer; the modules it
    uses stay registered and it accepts (and ignores) a transformer layer's keyword arguments."""
    if block.shortcut is None and not block.deletable:
        block.deleted(None)  # raises: a plain layer that changes shape
    return Skipped(block.shortcut, own_post(block))  # a Skipped module after it (a pruned model's) stays in its slot


def stand_in(view: ResidualView, step: Any) -> nn.Module:
    """The module a plan position holds in lesioned_model: the block's own module, or Deleted."""
    op, i = step
    op = Op(op)  # an unknown op raises ValueError here, as in core.apply_step
    if op == PARALLEL:
        raise ValueError("lesioned_model cannot build a parallel step (blocks averaged on one input): "
                         "a module slot holds one block; use core.run_plan for such plans.")
    return view.blocks[i].module if op == RUN else Deleted(view.blocks[i])


def lesioned_model(model: nn.Module, plan: Plan, example_input: Any, **view_options: Any) -> nn.Module:
    """A deep copy of model in which the module of each plan position is the block the plan runs
    there (or a Deleted stand-in): the obviously-correct way to run a plan, by a plain forward.

    Works for models that call their blocks in order through the blocks' slots (nn.Sequential or
    nn.ModuleList children), which is every model respaths' adapters know."""
    twin = copy.deepcopy(model)
    v = make_view(twin, example_input, **view_options)
    slots = {}
    for parent_name, parent in twin.named_modules():
        for name, child in parent.named_children():
            slots[id(child)] = (parent, name)
    where = []
    for b in v.blocks:
        if b.module is None or id(b.module) not in slots:
            raise ValueError(f"block {b.index} ({b.name}) has no module slot to replace.")
        where.append(slots[id(b.module)])
    if len(plan.steps) != len(v):
        raise ValueError("lesioned_model needs a plan with one step per block.")
    new = [stand_in(v, step) for step in plan.steps]
    for (parent, name), module in zip(where, new):
        parent._modules[name] = module
    return twin
