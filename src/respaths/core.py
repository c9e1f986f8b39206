"""The one idea respaths is built on: a model is stem -> blocks -> head, and a block is a triple.

A residual block computes   y = post(shortcut(x) + branch(x))
  - pre-activation ResNet: post is the identity;
  - original ResNet:       post is ReLU;
  - post-LN transformer:   post is LayerNorm.
Deleting a block at test time leaves y = post(shortcut(x)); for a shape-changing block the
shortcut is its projection (or zero-pad), as in Veit et al. 2016.

A plain layer (VGG, a ResNet with its shortcuts removed) is a Block whose shortcut is None:
y = post(branch(x)). Deleting it means skipping it, which is only possible where its input and
output shapes agree; `Block.deletable` says so.

A Plan is an ordered list of steps over the blocks: ("run", i) or ("delete", i), and
("parallel", (i, j, ...)): run those blocks on the same input and average their outputs (the
"Transformer Layers as Painters" experiment). Every experiment
(single deletion, k random deletions, reordering, ...) is a set of plans; `run_plan` is the plain,
obviously-correct way to execute one, against which the fast engine is tested.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn


class UserError(Exception):
    """Bad input from the user: the message is one sentence saying what was wrong and what to do."""


def identity(x: Tensor) -> Tensor:
    return x


@contextlib.contextmanager
def eval_mode(model: nn.Module | None) -> Iterator[None]:
    """Eval mode for the duration, then each module's own training flag back (the one place that
    saves and restores training mode: the engine, the path gradients, adapters' checks, evaluation)."""
    if model is None:
        yield
        return
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


@dataclass(eq=False)
class Block:
    """One block of the view: three callables plus what the experiments need to know about it."""

    branch: Callable[[Tensor], Tensor]
    shortcut: Callable[[Tensor], Tensor] | None = identity  # None: a plain layer with no skip
    post: Callable[[Tensor], Tensor] = identity
    name: str = ""
    index: int = -1
    stage: int = 0
    downsample: bool = False  # changes the shape of the activation (stride or width)
    module: nn.Module | None = None  # the module this block came from, if any
    in_shape: tuple[int, ...] | None = None  # per-example shape, filled by ResidualView.probe
    out_shape: tuple[int, ...] | None = None
    # The model's own computation of the block, where the triple equals it only up to rounding: a
    # whole transformer layer is two residual sums, x + a + m, which is not (x + a) + m bit for bit.
    # When set, block(x) calls it; branch/shortcut/post still describe the block for path analyses.
    forward: Callable[[Tensor], Tensor] | None = None

    @property
    def residual(self) -> bool:
        return self.shortcut is not None

    @property
    def deletable(self) -> bool:
        if self.residual:
            return True
        return self.in_shape is not None and self.in_shape == self.out_shape

    def __call__(self, x: Tensor) -> Tensor:
        if self.forward is not None:
            return self.forward(x)
        if self.shortcut is None:
            return self.post(self.branch(x))
        return self.post(self.shortcut(x) + self.branch(x))

    def deleted(self, x: Tensor) -> Tensor:
        """The block removed at test time: post(shortcut(x)), or x for a plain layer."""
        if self.shortcut is None:
            if not self.deletable:
                raise ValueError(f"block {self.index} ({self.name}) is a plain layer that changes shape "
                                 f"{self.in_shape} -> {self.out_shape}; it cannot be deleted.")
            return x
        return self.post(self.shortcut(x))

    def info(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "stage": self.stage,
            "downsample": self.downsample,
            "residual": self.residual,
            "deletable": self.deletable,
            "in_shape": list(self.in_shape) if self.in_shape is not None else None,
            "out_shape": list(self.out_shape) if self.out_shape is not None else None,
        }


# ---------------------------------------------------------------------------------------------
# Plans

class Op(str, Enum):
    """What a plan step does. A str, so that ("run", 3) and (Op.RUN, 3) are the same step: equal,
    hashed alike, and written as "run" in plan keys and JSON."""

    RUN = "run"
    DELETE = "delete"
    PARALLEL = "parallel"

    def __str__(self) -> str:  # "run", not "Op.RUN", in f-strings on every Python version
        return self.value

    __format__ = str.__format__


RUN, DELETE, PARALLEL = Op.RUN, Op.DELETE, Op.PARALLEL
Step = tuple[Op, Any]  # (RUN | DELETE, i) or (PARALLEL, (i, j, ...))


@dataclass(frozen=True)
class Plan:
    """An ordered list of steps; hashable so that plans can key result files and tries."""

    steps: tuple[Step, ...]
    label: str = field(default="", compare=False)

    @property
    def deleted(self) -> list[int]:
        return sorted(i for op, i in self.steps if op == DELETE)

    @property
    def order(self) -> list[int]:
        return [i for _, i in self.steps]

    def key(self) -> str:
        """A stable text key: 'r0 r1 d2 r3'; a parallel step reads 'p1+2+3'."""
        return " ".join(f"p{'+'.join(map(str, i))}" if op == PARALLEL else f"{op[0]}{i}"
                        for op, i in self.steps)


def full_plan(n: int) -> Plan:
    return Plan(tuple((RUN, i) for i in range(n)), label="baseline")


def delete_blocks(n: int, deleted: Iterable[int], label: str = "") -> Plan:
    """The plan that runs blocks 0..n-1 in order with the given ones deleted."""
    gone = set(int(i) for i in deleted)
    bad = [i for i in gone if not 0 <= i < n]
    if bad:
        raise ValueError(f"block index {bad[0]} is out of range for a model with {n} blocks.")
    return Plan(tuple((DELETE if i in gone else RUN, i) for i in range(n)),
                label=label or f"delete {sorted(gone)}")


def reorder_blocks(order: Sequence[int], label: str = "") -> Plan:
    """The plan that runs every block once, in the given order."""
    if sorted(order) != list(range(len(order))):
        raise ValueError(f"an order must be a permutation of 0..{len(order) - 1}; got {list(order)}.")
    return Plan(tuple((RUN, int(i)) for i in order), label=label or "reorder")


# ---------------------------------------------------------------------------------------------
# The view


@dataclass(frozen=True, eq=False)
class StemContext:
    """What one stem call's activations belong to, besides themselves: the leading dimensions every
    activation of that input keeps (the batch, and a transformer's sequence length), and the
    adapter's state for that input (a Hugging Face model's attention mask and positions; None for
    views whose blocks need nothing but the activation). Made by ResidualView.stem_with_context."""

    shape: tuple[int, ...]
    state: Any = None

    def check(self, x: Tensor) -> None:
        """Raise unless x has this context's leading dimensions (an activation of another batch)."""
        got = tuple(x.shape[:len(self.shape)])
        if got != self.shape:
            raise UserError(f"this activation has leading dimensions {got}, but its context comes from a stem call "
                            f"on {self.shape}; pass the context that view.stem_with_context returned for the "
                            f"batch this activation was computed from.")


class ResidualView:
    """A model seen as stem -> blocks -> head.

    `stem(inputs)` gives the activation entering block 0, `head(x)` turns the activation leaving the
    last block into the model's output. The view does not own parameters: `model` does.
    """

    def __init__(self, stem: Callable, blocks: Sequence[Block], head: Callable,
                 model: nn.Module | None = None, name: str = "", adapter: str = ""):
        self.stem = stem
        self.blocks = list(blocks)
        self.head = head
        self.model = model
        self.name = name
        self.adapter = adapter
        for i, b in enumerate(self.blocks):
            b.index = i

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> Block:
        return self.blocks[i]

    def __call__(self, inputs: Any, plan: Plan | None = None) -> Tensor:
        return run_plan(self, inputs, plan)

    @property
    def deletable(self) -> list[int]:
        return [b.index for b in self.blocks if b.deletable]

    def stem_with_context(self, inputs: Any) -> tuple[Tensor, StemContext]:
        """The stem's activation and the context it belongs to, for run_from. Nothing is kept in the
        view, so activations of several batches can be held and run on at once."""
        x = self.stem(inputs)
        return x, StemContext(tuple(x.shape[:1]))

    @contextlib.contextmanager
    def bound(self, context: StemContext) -> Iterator[None]:
        """The blocks read `context` for the duration (a no-op here: these blocks need nothing but
        the activation; adapters whose blocks read per-input state override it)."""
        yield

    def run_from(self, i: int, x: Tensor, context: StemContext, plan: Plan | None = None,
                 to: int | None = None) -> Tensor:
        """Run plan steps i.. (the full plan's: blocks i..) on the activation x entering step i, then
        the head: the model's output from an intermediate activation. `context` is what
        stem_with_context returned for the batch x was computed from; an activation of another batch
        is refused. With `to`, stop before step `to` and return the activation there instead."""
        steps = (plan or full_plan(len(self))).steps
        end = len(steps) if to is None else to
        if not 0 <= i <= end <= len(steps):
            raise UserError(f"run_from({i}, to={to}) is outside the plan's {len(steps)} steps; give "
                            f"0 <= i <= to <= {len(steps)}.")
        context.check(x)
        with self.bound(context):
            for step in steps[i:end]:
                x = apply_step(self, step, x)
            return x if to is not None else self.head(x)

    @torch.no_grad()
    def probe(self, inputs: Any) -> "ResidualView":
        """Run once to record each block's per-example input and output shapes."""
        x = self.stem(inputs)
        for b in self.blocks:
            b.in_shape = tuple(x.shape[1:])
            x = b(x)
            b.out_shape = tuple(x.shape[1:])
            if not b.downsample and b.in_shape != b.out_shape:
                b.downsample = True
        return self

    def info(self) -> list[dict[str, Any]]:
        return [b.info() for b in self.blocks]

    def swappable_pairs(self) -> list[tuple[int, int]]:
        """Pairs of blocks that can trade places: same input and output shape, neither downsampling.

        Two blocks are compatible when both keep the shape and see the same shape, which never holds
        across a shape change."""
        ok = [b for b in self.blocks if b.residual and not b.downsample and b.in_shape is not None
              and b.in_shape == b.out_shape]
        return [(a.index, c.index) for k, a in enumerate(ok) for c in ok[k + 1:] if a.in_shape == c.in_shape]


def run_plan(view: ResidualView, inputs: Any, plan: Plan | None = None) -> Tensor:
    """Execute a plan the obvious way: stem, each step in turn, head."""
    x = view.stem(inputs)
    if plan is None:
        for b in view.blocks:
            x = b(x)
    else:
        for step in plan.steps:
            x = apply_step(view, step, x)
    return view.head(x)


def apply_step(view: ResidualView, step: Step, x: Any, run_block: Callable | None = None) -> Any:
    """One plan step on the activation x; run_block(block, x), if given, runs a block (the engine's
    speed tricks). The reference, the engine and lesioned_model all read steps through here."""
    op, i = step
    if op == RUN:
        return run_block(view.blocks[i], x) if run_block is not None else view.blocks[i](x)
    if op == DELETE:
        return view.blocks[i].deleted(x)
    if op == PARALLEL:
        return run_parallel(view.blocks, i, x)
    raise ValueError(f"unknown plan step {step!r}: the op must be one of {[o.value for o in Op]}.")


def run_parallel(blocks: Sequence[Block], indices: Sequence[int], x: Tensor) -> Tensor:
    """The blocks run side by side on the same input, their outputs averaged (in index order)."""
    return torch.stack([blocks[i](x) for i in indices]).mean(0)
