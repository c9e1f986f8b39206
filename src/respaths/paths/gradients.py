"""Path gradients (section 2 of respaths.paths): the paper's protocol, backpropagating through the
branch of k sampled blocks and the shortcut of the rest, measured exactly and many paths at a time."""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .. import distributed
from ..core import ResidualView, UserError, eval_mode, identity
from ..engine.options import EngineOptions
from ..metrics import next_token_loss
from ..stats import mean_ci

# ---------------------------------------------------------------------------------------------
# 2. Path gradients


def path_loss(output: Tensor, targets: Any) -> Tensor:
    """The loss a path's gradient is taken of: the cross-entropy of class labels, or, when targets is a
    decoder's token batch (a dict with input_ids), its mean next-token cross-entropy (the LM loss)."""
    if isinstance(targets, dict):
        return next_token_loss(output, targets)
    return F.cross_entropy(output, targets)


def _is_identity(f: Any) -> bool:
    return f is identity or isinstance(f, nn.Identity)


def _batch_norm_args(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                     eps=1e-5):
    return input, running_var, weight, training, eps


class EvalBatchNormAsScale(TorchFunctionMode):
    """While active, an eval-mode F.batch_norm keeps its exact output but backpropagates as what it
    is, a per-channel scale. Only for speed: vmap's generic batch-norm backward costs several times
    a multiplication, and the path-gradient backward passes are mostly convolutions and these."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is F.batch_norm:
            x, running_var, weight, training, eps = _batch_norm_args(*args, **(kwargs or {}))
            if not training and running_var is not None:
                scale = torch.rsqrt(running_var + eps) * (1 if weight is None else weight)
                linear = x * scale.view(-1, *[1] * (x.dim() - 2))
                out = out.detach() + (linear - linear.detach())  # the exact value, the scale's gradient
        return out


class PathGradients:
    """A batch's forward pass through a view, kept as each block's vjp, ready for sampled paths.

    The network is taken as it is: call it on a model in eval mode (BatchNorm with its running
    statistics) so that every Jacobian is that of the fixed, trained network rather than of the
    batch statistics, and with parameters that do not require grad (only input gradients are
    computed). `measure_path_gradients` does both. The cotangent at the end is the gradient of the
    cross-entropy loss (mean over the batch; for a decoder, whose targets are its token batch, the
    next-token loss: path_loss) with respect to the last block's output, through the head, computed once; `post` is backpropagated at the point the forward pass reached, so a path
    sees ReLUs and LayerNorms exactly as the whole network did.
    """

    def __init__(self, view: ResidualView, inputs: Any, targets: Tensor, channels_last: bool = False):
        bad = [b.index for b in view.blocks if not b.residual]
        if bad:
            raise UserError(f"block {bad[0]} of {view.name or 'this model'} is a plain layer with no shortcut, "
                            f"so paths cannot skip it; path gradients need a residual model.")
        self.n = len(view.blocks)
        self.vjps: list[tuple[Any, Any, Any]] = []  # per block: (post, branch, shortcut) vjp or None
        self.in_shapes: list[torch.Size] = []
        with torch.no_grad():
            h = view.stem(inputs)
        if channels_last and h.dim() == 4:
            # fast mode (with the weights made channels_last by engine.speed.optimise): oneDNN's NHWC kernels
            h = h.contiguous(memory_format=torch.channels_last)
        with EvalBatchNormAsScale():
            for b in view.blocks:
                self.in_shapes.append(h.shape)
                r, branch_vjp = torch.func.vjp(b.branch, h)
                s, shortcut_vjp = (h, None) if _is_identity(b.shortcut) else torch.func.vjp(b.shortcut, h)
                z = s + r
                h, post_vjp = (z, None) if _is_identity(b.post) else torch.func.vjp(b.post, z)
                self.vjps.append((post_vjp, branch_vjp, shortcut_vjp))
        self.branch_rows = 0  # rows backpropagated through a branch so far: the work done
        # On a CPU one vjp call per row is about twice as fast as torch.func.vmap over the rows;
        # on an accelerator vmap saves kernel launches.
        self.vmap = h.device.type != "cpu"
        h = h.detach().requires_grad_()
        with torch.enable_grad():
            loss = path_loss(view.head(h), targets)
            (self.cotangent,) = torch.autograd.grad(loss, h)
        if channels_last and h.dim() == 4:  # the head's gradient comes back NCHW; keep every row NHWC
            self.cotangent = self.cotangent.contiguous(memory_format=torch.channels_last)
        self.loss = float(loss.detach())

    def _apply(self, vjp: Any, rows: list[Tensor]) -> list[Tensor]:
        """vjp applied to each row (one path's cotangent for the whole batch)."""
        if not rows:
            return []
        if not self.vmap:
            return [vjp(r)[0] for r in rows]
        return list(torch.func.vmap(vjp)(torch.stack(rows))[0].unbind(0))

    def rows(self, chosen: Tensor) -> tuple[list[Tensor], Tensor]:
        """Gradients at the input of block 0 for M paths; chosen[m, i] says path m takes block i's branch.

        Returns (rows, which): the gradient of path m is rows[which[m]]. Going from the last block to
        the first, each row is one distinct suffix of choices: paths that agree on their last blocks
        share the work through them, identical paths cost one, and a shortcut that is the identity
        passes its row on as it is."""
        chosen = chosen.to(torch.bool).cpu()
        which = torch.zeros(chosen.shape[0], dtype=torch.long)  # every path starts at the loss
        rows = [self.cotangent]
        for i in reversed(range(self.n)):
            post_vjp, branch_vjp, shortcut_vjp = self.vjps[i]
            if post_vjp is not None:
                rows = self._apply(post_vjp, rows)
            # the distinct suffixes after block i: (row so far, branch or shortcut here), in order
            suffix, which = torch.unique(which * 2 + chosen[:, i], return_inverse=True)
            parent, branch = (suffix // 2).tolist(), (suffix % 2 == 1).tolist()
            via_branch = self._apply(branch_vjp, [rows[p] for p, b in zip(parent, branch) if b])
            via_shortcut = [rows[p] for p, b in zip(parent, branch) if not b]
            if shortcut_vjp is not None:
                via_shortcut = self._apply(shortcut_vjp, via_shortcut)
            self.branch_rows += len(via_branch)
            take_branch, take_shortcut = iter(via_branch), iter(via_shortcut)
            rows = [next(take_branch) if b else next(take_shortcut) for b in branch]
        return rows, which

    def grads(self, chosen: Tensor) -> Tensor:
        """The gradient at the input of block 0 of each path: [M, *input shape of block 0]."""
        rows, which = self.rows(chosen)
        return torch.stack(rows)[which.to(rows[0].device)]

    def auto_chunk(self, memory_bytes: int = 1 << 30) -> int:
        """How many paths to backpropagate at once so that their rows fit in about memory_bytes."""
        row = max(math.prod(shape) for shape in self.in_shapes) * self.cotangent.element_size()
        return max(1, min(1024, memory_bytes // (6 * row)))  # about six live copies of each row

    def norms(self, chosen: Tensor, chunk: int = 64) -> Tensor:
        """The norm of each path's gradient (over the whole batch tensor), chunk paths at a time.

        Paths are taken in lexicographic order of their choices from the last block back, so a
        chunk holds paths with long common suffixes, whose work is shared (see rows)."""
        chosen = chosen.to(torch.bool).cpu()
        order = torch.from_numpy(np.lexsort(chosen.numpy().T)) if len(chosen) else torch.zeros(0, dtype=torch.long)
        out = torch.zeros(len(chosen), dtype=torch.float64)
        for start in range(0, len(chosen), chunk):
            mine = order[start:start + chunk]
            rows, which = self.rows(chosen[mine])
            out[mine] = torch.stack([torch.linalg.vector_norm(r) for r in rows]).double().cpu()[which]
        return out


def naive_path_gradient(view: ResidualView, inputs: Any, targets: Tensor, chosen: Iterable[int],
                        full_backward: bool = False) -> Tensor:
    """The reference: one full forward and autograd backward in which every block passes the gradient
    through its branch (if chosen) or its shortcut (otherwise) only; the other term is detached, so
    the forward values, and hence post's Jacobian, are those of the whole network.

    full_backward=True runs it as a training-style loop would: loss.backward() with the model's
    parameters requiring grad, so the chosen branches' weight gradients are computed too (then
    dropped: each parameter's .grad and requires_grad are restored). The input gradient is the same."""
    chosen = set(int(i) for i in chosen)
    params = list(view.model.parameters()) if full_backward and view.model is not None else []
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]  # a caller's accumulated gradients survive the reference pass
    with torch.no_grad():
        h0 = view.stem(inputs)
    h0.requires_grad_()
    try:
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        with torch.enable_grad():
            h = h0
            for b in view.blocks:
                s, r = b.shortcut(h), b.branch(h)
                h = b.post(s.detach() + r if b.index in chosen else s + r.detach())
            loss = path_loss(view.head(h), targets)
            if full_backward:
                loss.backward()
                return h0.grad
            (g,) = torch.autograd.grad(loss, h0)
            return g
    finally:
        for p, flag, grad in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = grad


def sample_paths(n: int, k: int, count: int, generator: torch.Generator) -> Tensor:
    """count paths of length k: each takes the branch of k of the n blocks drawn uniformly at random."""
    order = torch.rand(count, n, generator=generator).argsort(dim=1)
    chosen = torch.zeros(count, n, dtype=torch.bool)
    chosen.scatter_(1, order[:, :k], True)
    return chosen


def length_generator(seed: int, k: int) -> torch.Generator:
    """The random stream of one path length: the same whatever other lengths are run, or in what order."""
    state = np.random.SeedSequence([seed, k]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def summarize(values: Sequence[float] | Tensor, confidence: float = 0.95) -> dict[str, Any]:
    """mean, standard deviation (n-1), and Student-t confidence interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return {"samples": len(v), "mean": mean, "std": None, "ci": [None, None]}
    return {"samples": len(v), "mean": mean, "std": float(v.std(ddof=1)), "ci": mean_ci(v, confidence)}


@contextlib.contextmanager
def frozen(view: ResidualView) -> Iterator[None]:
    """The fixed network: eval mode, parameters not requiring grad; both restored afterwards."""
    model = view.model
    if model is None:
        yield
        return
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in flags:
        p.requires_grad_(False)
    try:
        with eval_mode(model):
            yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


@contextlib.contextmanager
def fast_network(view: ResidualView, probe: Any, engine: EngineOptions = EngineOptions(fast=True)) -> Iterator[None]:
    """With engine.fast: the lesion engine's rewrite (EngineOptions.prepare: eval BatchNorm folded
    into the preceding convolution, weights channels_last), undone on exit. Give PathGradients
    channels_last=True with it. The backward passes then skip those BatchNorms' scaling and run
    oneDNN's NHWC kernels. Of the engine's options only fast applies here (dtype, compile and
    cache_bytes are the trie walk's)."""
    with EngineOptions(fast=engine.fast).prepare(view, probe):
        yield


def length_key(k: int) -> str:
    return f"k{k:03d}"


def length_record(n: int, k: int, norms: Sequence[float] | Tensor, confidence: float = 0.95,
                  seconds: float | None = None) -> dict[str, Any]:
    """One result record per path length: counts, the gradient-norm summary, and the total."""
    s = summarize(norms, confidence)
    record = {"key": length_key(k), "length": k, "paths": math.comb(n, k), "path_fraction": math.comb(n, k) / 2 ** n,
              **s, "total": math.comb(n, k) * s["mean"]}
    if seconds is not None:
        record["seconds"] = round(seconds, 3)
    return record


def lengths_to_measure(view: ResidualView, lengths: Iterable[int], skip: Iterable[int], batches: Sequence) -> list[int]:
    """The lengths still to measure (not in skip), after checking them and that there is a batch."""
    n = len(view.blocks)
    todo = [k for k in lengths if k not in set(skip)]
    bad = [k for k in todo if not 0 <= k <= n]
    if bad:
        raise UserError(f"path length {bad[0]} is out of range: this model has {n} blocks, so lengths are 0..{n}.")
    if not batches:
        raise UserError("path gradients need at least one training batch.")
    return todo


def measure_path_gradients(view: ResidualView, batches: Sequence[tuple[Any, Tensor]], lengths: Iterable[int],
                           samples: int = 1000, seed: int = 0, chunk: int | None = None,
                           confidence: float = 0.95, skip: Iterable[int] = (),
                           progress: bool = False, engine: EngineOptions = EngineOptions()) -> Iterator[dict[str, Any]]:
    """The paper's protocol: for each length k, `samples` random paths; path j uses batch j % len(batches).

    batches: (inputs, targets) from the training set, already on the device and normalised.
    Yields one record per length as it finishes (lengths in `skip` are left out, for resuming);
    each length's paths come from its own seeded stream, so a record does not depend on the others.
    Runs on the fixed network (eval mode, no parameter gradients; see PathGradients); engine.fast runs
    it as fast_network does (norms within ~1.5e-3 relative of the exact ones on a 54-block net).

    Under torchrun (respaths.distributed; a no-op in one process) every rank yields the same records.
    The unit of work is one (length, batch): that batch's share of the length's drawn paths (the
    stream is seeded by the length alone, never by the rank), so the norms are bit-identical on any
    number of ranks and only "seconds" (the units' compute time, summed over ranks) differs. Lengths
    go `world` at a time (one at a time in one process); within such a round the units are dealt out
    i -> rank i % world, so each length's samples are split across the ranks."""
    from tqdm.auto import tqdm

    lengths = list(lengths)
    n, todo = len(view.blocks), lengths_to_measure(view, lengths, skip, batches)
    before = len(set(lengths)) - len(set(todo))  # lengths an earlier run measured, shown as done
    if view.model is not None:
        distributed.check_same("model weights", view.model.state_dict().values())
    world = distributed.world()
    rounds = [todo[r:r + world] for r in range(0, len(todo), world)]
    units = [[(k, b) for k in ks for b in range(min(len(batches), samples))] for ks in rounds]
    # a rank that only ever sees one batch keeps its forward pass for every length
    keep = len({b for round_units in units for _, b in distributed.shard(round_units)}) == 1
    kept: dict[int, PathGradients] = {}
    with frozen(view), fast_network(view, batches[0][0], engine), \
            tqdm(total=samples * (len(todo) + before), initial=samples * before, disable=not (progress and distributed.is_main()),
                 unit="path", desc="path gradients" + (f" on {world} ranks" if world > 1 else "")) as bar:
        for ks, round_units in zip(rounds, units):

            def compute() -> list[tuple[int, int, Tensor, float]]:
                done = []
                for k, b in distributed.shard(round_units):
                    start = time.perf_counter()
                    chosen = sample_paths(n, k, samples, length_generator(seed, k))
                    mine = torch.arange(b, samples, len(batches))
                    pg = kept.get(b) or PathGradients(view, *batches[b], channels_last=engine.fast)
                    if keep:
                        kept[b] = pg
                    done.append((k, b, pg.norms(chosen[mine], chunk or pg.auto_chunk()), time.perf_counter() - start))
                return done

            parts = [unit for part in distributed.gather(distributed.all_ok(compute)) for unit in part]
            for k in ks:
                norms = torch.zeros(samples, dtype=torch.float64)
                seconds = 0.0
                for kk, b, values, s in parts:
                    if kk == k:
                        norms[torch.arange(b, samples, len(batches))] = values
                        seconds += s
                yield length_record(n, k, norms, confidence, seconds)
            bar.update(samples * len(ks))
