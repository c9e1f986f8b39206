"""The lesion engine: evaluate many plans over a dataset, sharing every computation they share.

Plans that start alike compute the same activations up to where they part. The engine arranges the
plans as a trie (one node per distinct prefix of steps) and, for each batch, walks it depth first:
a node's activation is computed once, from its parent's, and handed to its children. Where a
node has several children its activation is kept until the last child has it (a branch-point
cache); children are visited lightest first so that the heaviest subtree inherits the activation
without a copy (and the node lets it go), which keeps at most ~log2(#plans) activations alive at
once: one is held only while a lighter child is visited, and such a child has at most half the
plans below it. `cache_bytes` bounds what is kept: over the bound, a branch point is recomputed
from the nearest kept ancestor (or the batch) instead, trading time for memory.

For single deletion of n blocks this runs ~n^2/2 block evaluations per batch instead of n^2; the
rest of the speed comes from per-block tricks, off by default because they change rounding:
`EngineOptions` (respaths.engine.options) holds them (dtype, fast, compile) and cache_bytes, and
prepares the model for the walk (undone after) and each batch for the prepared model.

With the defaults (EngineOptions()) every plan's logits are bit-identical to running the model with
the blocks really removed at the same batch size (tests/engine/test_trie.py checks it). The model is
put in eval mode and run under torch.inference_mode; its state is restored afterwards.

evaluate_plans(..., metric=M) -> one respaths.metrics.PlanResult per plan: M's numbers (LM loss and
perplexity, embedding cosine to the full model, classifier error; ClassifierError when M is None),
what M keeps per example (the classifier's correctness, for paired statistics) and seconds (the
plan's share of the wall time: each node's time split evenly between the plans below it). The
metric accumulates its per-example statistics at each plan's leaf, so any head output can be
scored, not only (N, C) logits; data may then be a list of dict batches (input_ids,
attention_mask, labels, ...), used as given. The trie is the same, and so is the sharing.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves
from tqdm.auto import tqdm

from ..core import PARALLEL, RUN, Plan, ResidualView, UserError, apply_step, eval_mode
from ..metrics import ClassifierError, Metric, PlanResult
from .batching import batch_length, count_examples, first_examples, iterate_data
from .options import EngineOptions


# ---------------------------------------------------------------------------------------------
# The trie of plans

class Node:
    __slots__ = ("step", "children", "ends", "weight", "seconds", "head_seconds")

    def __init__(self, step: Any = None):
        self.step = step
        self.children: dict[Any, Node] = {}
        self.ends: list[int] = []  # plans that end here
        self.weight = 0  # plans ending at or below this node
        self.seconds = 0.0  # time spent computing this node's activation
        self.head_seconds = 0.0  # time spent on the head for the plans ending here

    def kids(self) -> list["Node"]:
        return sorted(self.children.values(), key=lambda c: c.weight)  # stable: heaviest last


def build_trie(plans: Sequence[Plan]) -> Node:
    root = Node()
    for pid, plan in enumerate(plans):
        node = root
        node.weight += 1
        for step in plan.steps:
            node = node.children.setdefault(step, Node(step))
            node.weight += 1
        node.ends.append(pid)
    return root


def trie_cost(plans: Sequence[Plan], runs_only: bool = False) -> tuple[int, int]:
    """(block steps the trie runs, block steps running each plan separately would) per batch.

    runs_only: count only steps that run blocks (a parallel step counts its blocks), not deletions,
    which cost nothing in a pre-LN transformer (the layer is skipped)."""
    def cost(step: Any) -> int:
        op, i = step
        return 1 if not runs_only else len(i) if op == PARALLEL else int(op == RUN)

    def count(node: Node) -> int:
        return sum(cost(c.step) + count(c) for c in node.children.values())
    return count(build_trie(plans)), sum(cost(s) for p in plans for s in p.steps)


def nbytes(x: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(x) if isinstance(t, Tensor))


# ---------------------------------------------------------------------------------------------
# The engine

class _Walk:
    """One depth-first walk of the trie over one batch."""

    def __init__(self, view: ResidualView, root: Node, cache_bytes: int, finish, run_block=None):
        self.view, self.root, self.cache_bytes, self.finish = view, root, cache_bytes, finish
        self.run_block = run_block
        self.held = 0
        self.inputs: Any = None

    def replay(self, anchor: Any, steps: list[Any]) -> Any:
        x = self.view.stem(self.inputs) if anchor is None else anchor
        for s in steps:
            x = apply_step(self.view, s, x, self.run_block)
        return x

    def run(self, inputs: Any) -> None:
        self.inputs = inputs
        t = time.perf_counter()
        x = self.view.stem(inputs)
        self.root.seconds += time.perf_counter() - t
        self.visit(self.root, x, None, [])
        self.inputs = None

    def visit(self, node: Node, x: Any, anchor: Any, steps: list[Any]) -> None:
        # x: this node's activation; anchor + steps: how to compute it again from a kept one.
        if node.ends:
            t = time.perf_counter()
            self.finish(node.ends, self.view.head(x))
            node.head_seconds += time.perf_counter() - t
        kids = node.kids()
        if not kids:
            return
        keep = len(kids) > 1 and self.held + nbytes(x) <= self.cache_bytes
        size = nbytes(x) if keep else 0
        self.held += size
        inherited = anchor, steps
        if keep:
            anchor, steps = x, []
        for j, kid in enumerate(kids):
            last = j == len(kids) - 1
            t = time.perf_counter()
            if x is None:  # not kept: recompute from the nearest kept ancestor
                x = self.replay(anchor, steps)
            if keep and last:
                # nothing here needs x after this child: release it, so that a long chain of
                # branch points (a greedy step's candidates) holds one activation, not one per level
                self.held -= size
                size = 0
                anchor, steps = inherited
            y = apply_step(self.view, kid.step, x, self.run_block)
            if not keep or last:
                x = None  # let the child own the only reference
            kid.seconds += time.perf_counter() - t
            self.visit(kid, y, anchor, steps + [kid.step])
            del y
        self.held -= size


def evaluate_plans(view: ResidualView, data: Any, plans: Sequence[Plan], *, metric: Metric | None = None,
                   batch_size: int = 256, device: str | torch.device | None = None,
                   engine: EngineOptions = EngineOptions(), keep_logits: bool = False,
                   progress: bool = False, desc: str = "plans",
                   advance: Callable[[float], None] | None = None) -> list[PlanResult]:
    """Evaluate every plan on every example of data; see the module docstring. engine: the speed
    tricks and cache bound (EngineOptions; the defaults are exact). Without a metric: ClassifierError
    (keep_logits: it keeps each plan's logits too). advance, if given, is called after each batch with
    the share of the data done by it (for a caller's bar over several calls)."""
    plans = list(plans)
    if not plans:
        return []
    model = view.model
    if device is None:
        p = next(model.parameters(), None) if model is not None else None
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    scorer = metric if metric is not None else ClassifierError(keep_logits)
    walked = scorer.start(plans, len(view))  # the plans, and any the metric needs beside them
    root = build_trie(walked)
    batch: dict[str, Any] = {}

    def finish(pids: list[int], output: Tensor) -> None:
        scorer.add(pids, output, batch)

    walk = _Walk(view, root, engine.cache_bytes, finish, engine.block_runner(view))
    total = count_examples(data)
    bar = tqdm(total=total, desc=f"{len(plans)} {desc}", unit="ex", disable=not progress, leave=False)
    autocast = engine.autocast(device)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.inference_mode())
        for k, (x, batch) in enumerate(iterate_data(data, batch_size, device)):
            if k == 0:
                check_inputs_untouched(view, first_examples(x, 2))
                stack.enter_context(engine.prepare(view, x[:32] if isinstance(x, Tensor) else x))
            x = engine.adapt(x, batch_size)
            with autocast:
                walk.run(x)
            bar.update(batch_length(batch))
            if advance is not None:  # by examples where their number is known, else by batches
                advance(batch_length(batch) / total if total else 1 / max(len(data), 1) if hasattr(data, "__len__") else 0.0)
    bar.close()
    wall = time.perf_counter() - start

    # each node's time is shared evenly by the plans below it
    shares = [0.0] * len(walked)
    stack = [(root, root.seconds / max(root.weight, 1))]
    while stack:
        node, share = stack.pop()
        for pid in node.ends:
            shares[pid] = share + node.head_seconds / len(node.ends)
        for c in node.children.values():
            stack.append((c, share + c.seconds / c.weight))
    overhead = (wall - sum(shares)) / len(walked)  # data loading, bookkeeping
    numbers = scorer.results()
    return [PlanResult(plan, numbers[pid], shares[pid] + overhead, scorer.kept(pid)) for pid, plan in enumerate(plans)]


def check_inputs_untouched(view: ResidualView, probe: Any) -> None:
    """The trie hands one activation to several children, so no block may change its input in place.

    Checked once, on a probe, through the version counters that inference mode switches off."""
    with torch.inference_mode(False), torch.no_grad():
        x = view.stem(probe.clone() if isinstance(probe, Tensor) else probe)
        for b in view.blocks:
            if not isinstance(x, Tensor):
                return
            version = x._version
            y = b(x)
            if b.deletable:
                b.deleted(x)
            if x._version != version:
                raise UserError(f"block {b.index} ({b.name}) changes its input in place (an inplace ReLU on "
                                f"the shortcut path?); make the view's callables out of place.")
            x = y


