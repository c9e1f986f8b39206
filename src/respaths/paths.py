"""Paths through a residual network: which exist, which carry the gradient, which survive a lesion.

Veit et al. (2016), section 5. Unrolled, n residual blocks y = post(shortcut(x) + branch(x)) are
2^n paths; a path of length k passes through the branch of k blocks and the shortcut of the rest.

  1. Path lengths     C(n, k) paths of length k; for a *linear* residual network the output is
                      exactly the sum of its 2^n path outputs (`unrolled_paths`).
  2. Path gradients   the paper's protocol: forward a training batch, then backpropagate through
                      the branch of k random blocks and the shortcut of the others, and record the
                      gradient norm at the input of block 0 (of the cross-entropy; for a Hugging Face
                      decoder with --text, of the LM loss: path_loss, text_paths). `PathGradients` does one forward per
                      batch, keeping each block's vjp (torch.func), then backpropagates many sampled
                      paths through them, once per distinct suffix of choices; no weight gradients.
                      fast=True (`respaths paths --fast`, fast_network): the same on the lesion
                      engine's rewrite, BN folded into convolutions and channels_last (norms within ~1.5e-3 relative).
  3. Effective paths  total gradient per length = C(n, k) x mean norm; the shortest range of
                      lengths holding 90% of it (the paper: 5-17 of 54 blocks, 0.45% of paths).
  4. Surviving paths  after deleting d blocks, C(n-d, x) / C(n, x) of the length-x paths are
                      intact; `count_surviving` counts them from a plan's steps instead.

Result file of `respaths paths` (run_path_gradients; ResultStore, OUT/paths.json and .csv), one
record per length k:
  key "k007", length, paths C(n, k), path_fraction C(n, k) / 2^n, samples,
  mean, std, ci [low, high] (Student t, 95%) of the gradient norm of one sampled path,
  total = paths x mean, seconds (the only field that differs between runs);
and at the top level `blocks` and `effective` {share, lengths [lo, hi], gradient_share, path_share,
measured_lengths}. Rows of check_surviving: key, deleted (d), counted and analytic (per x = 0..n), match.
"""
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

from . import distributed
from .core import DELETE, RUN, Plan, ResidualView, UserError, eval_mode, identity
from .data import batches as data_batches
from .engine import optimise
from .lesion import parse_k
from .metrics import inputs_of, next_token_loss, to_device
from .results import ResultStore
from .stats import mean_ci

# ---------------------------------------------------------------------------------------------
# 1. Path lengths


def path_counts(n: int) -> list[int]:
    """C(n, k) for k = 0..n: how many paths pass through exactly k branches (exact integers)."""
    return [math.comb(n, k) for k in range(n + 1)]


def path_fractions(n: int) -> list[float]:
    """C(n, k) / 2^n for k = 0..n."""
    return [c / 2 ** n for c in path_counts(n)]


def path_share(n: int, lo: int, hi: int) -> float:
    """The share of all 2^n paths whose length is in lo..hi (inclusive)."""
    return sum(math.comb(n, k) for k in range(max(lo, 0), min(hi, n) + 1)) / 2 ** n


def linear_residual_forward(weights: Sequence[Tensor], x: Tensor) -> Tensor:
    """A linear residual network: blocks y = x + W_i x (shortcut = identity, branch = W_i, no post)."""
    for w in weights:
        x = x + w @ x
    return x


def unrolled_paths(weights: Sequence[Tensor], x: Tensor) -> dict[tuple[int, ...], Tensor]:
    """Every path's output for the linear residual network: {(i1, i2, ...): W_.. W_i2 W_i1 x}.

    A path is the tuple of blocks whose branch it takes; () is the all-shortcut path. Each block
    doubles the set: every path so far either skips it or goes through its branch."""
    paths: dict[tuple[int, ...], Tensor] = {(): x}
    for i, w in enumerate(weights):
        paths.update({p + (i,): w @ out for p, out in list(paths.items())})
    return paths


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
            # fast mode (with the weights made channels_last by engine.optimise): oneDNN's NHWC kernels
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
def fast_network(view: ResidualView, probe: Any, fast: bool = True) -> Iterator[None]:
    """With fast: the lesion engine's rewrite (eval BatchNorm folded into the preceding convolution,
    weights channels_last; engine.optimise), undone on exit. Give PathGradients channels_last=True
    with it. The backward passes then skip those BatchNorms' scaling and run oneDNN's NHWC kernels."""
    if not fast:
        yield
        return
    with optimise(view, probe):
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
                           progress: bool = False, fast: bool = False) -> Iterator[dict[str, Any]]:
    """The paper's protocol: for each length k, `samples` random paths; path j uses batch j % len(batches).

    batches: (inputs, targets) from the training set, already on the device and normalised.
    Yields one record per length as it finishes (lengths in `skip` are left out, for resuming);
    each length's paths come from its own seeded stream, so a record does not depend on the others.
    Runs on the fixed network (eval mode, no parameter gradients; see PathGradients); fast=True runs it
    as fast_network does (norms within ~1.5e-3 relative of the exact ones on a 54-block net)."""
    from tqdm.auto import tqdm

    n, todo = len(view.blocks), lengths_to_measure(view, lengths, skip, batches)
    kept: dict[int, PathGradients] = {}
    with frozen(view), fast_network(view, batches[0][0], fast), \
            tqdm(total=samples * len(todo), disable=not progress, unit="path", desc="path gradients") as bar:
        for k in todo:
            start = time.perf_counter()
            chosen = sample_paths(n, k, samples, length_generator(seed, k))
            norms = torch.zeros(samples, dtype=torch.float64)
            for b, (inputs, targets) in enumerate(batches):
                mine = torch.arange(b, samples, len(batches))
                if len(mine):
                    pg = kept.get(b) or PathGradients(view, inputs, targets, channels_last=fast)
                    if len(batches) == 1:  # one batch: its forward pass serves every length
                        kept[b] = pg
                    norms[mine] = pg.norms(chosen[mine], chunk or pg.auto_chunk())
                    bar.update(len(mine))
            yield length_record(n, k, norms, confidence, time.perf_counter() - start)


def measure_path_gradients_sharded(view: ResidualView, batches: Sequence[tuple[Any, Tensor]], lengths: Iterable[int],
                                   samples: int = 1000, seed: int = 0, chunk: int | None = None,
                                   confidence: float = 0.95, skip: Iterable[int] = (),
                                   progress: bool = False, fast: bool = False) -> Iterator[dict[str, Any]]:
    """measure_path_gradients split across torchrun's ranks; every rank yields the same records.

    The unit of work is what one process does for one (length, batch): the same drawn paths (each
    length's stream is seeded by the length alone, never by the rank), the same chunks, so the norms
    are bit-identical to measure_path_gradients' and only "seconds" (the units' compute time, summed
    over ranks) differs. Lengths go `world` at a time; within such a round the (length, batch) units
    are dealt out i -> rank i % world, so each length's samples are split across the ranks."""
    from tqdm.auto import tqdm

    n, todo = len(view.blocks), lengths_to_measure(view, lengths, skip, batches)
    if view.model is not None:
        distributed.check_same("model weights", view.model.state_dict().values())
    world = distributed.world()
    rounds = [todo[r:r + world] for r in range(0, len(todo), world)]
    units = [[(k, b) for k in ks for b in range(min(len(batches), samples))] for ks in rounds]
    # a rank that only ever sees one batch keeps its forward pass for every length, as one process does
    keep = len({b for round_units in units for _, b in distributed.shard(round_units)}) == 1
    kept: dict[int, PathGradients] = {}
    with frozen(view), fast_network(view, batches[0][0], fast), \
            tqdm(total=samples * len(todo), disable=not (progress and distributed.is_main()), unit="path",
                 desc=f"path gradients on {world} ranks") as bar:
        for ks, round_units in zip(rounds, units):

            def compute() -> list[tuple[int, int, Tensor, float]]:
                done = []
                for k, b in distributed.shard(round_units):
                    start = time.perf_counter()
                    chosen = sample_paths(n, k, samples, length_generator(seed, k))
                    mine = torch.arange(b, samples, len(batches))
                    pg = kept.get(b) or PathGradients(view, *batches[b], channels_last=fast)
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


# ---------------------------------------------------------------------------------------------
# 3. Total gradient and effective paths


def total_gradient(n: int, mean_norms: dict[int, float]) -> dict[int, float]:
    """Gradient carried by all paths of each length: C(n, k) x the mean norm of one such path."""
    return {k: math.comb(n, k) * m for k, m in sorted(mean_norms.items())}


def effective_range(n: int, totals: dict[int, float], share: float = 0.9) -> dict[str, Any]:
    """The shortest range of lengths lo..hi holding at least `share` of the total gradient.

    Only the measured lengths count (the total is their sum). Among ranges of equal width the one
    holding more wins. Also returns the share of all 2^n paths whose length lies in the range."""
    if not 0 < share <= 1:
        raise UserError(f"the effective share must be in (0, 1], not {share}.")
    ks = sorted(totals)
    if not ks:
        raise UserError("no measured lengths to find an effective range in.")
    whole = sum(totals[k] for k in ks)
    best = None
    for a in range(len(ks)):
        held = 0.0
        for b in range(a, len(ks)):
            held += totals[ks[b]]
            if held >= share * whole * (1 - 1e-12):
                cand = (ks[b] - ks[a], -held, ks[a], ks[b])
                best = cand if best is None or cand < best else best
                break
    _, held, lo, hi = best
    return {"share": share, "lengths": [lo, hi], "gradient_share": -held / whole if whole else 0.0,
            "path_share": path_share(n, lo, hi)}


# ---------------------------------------------------------------------------------------------
# 4. Surviving paths


def surviving_fraction(n: int, d: int, x: int) -> float:
    """The share of length-x paths left intact after deleting d of n blocks: C(n-d, x) / C(n, x)."""
    return math.comb(n - d, x) / math.comb(n, x)


def count_surviving(plan: Plan | Sequence[int], n: int) -> list[int]:
    """How many paths of each length 0..n the plan leaves, counted block by block from its steps.

    A deleted block offers only its shortcut, a run block both ways, so the counts are the
    coefficients of the product over steps of (1) or (1 + t); no closed form is used."""
    gone = set(plan.deleted) if isinstance(plan, Plan) else set(int(i) for i in plan)
    steps = plan.steps if isinstance(plan, Plan) else [(DELETE if i in gone else RUN, i) for i in range(n)]
    counts = [1] + [0] * n
    for op, _ in steps:
        if op != DELETE:
            counts = [counts[0]] + [counts[x] + counts[x - 1] for x in range(1, n + 1)]
    return counts


def check_surviving(n: int, lesions: Iterable[Plan | dict[str, Any] | Sequence[int]]) -> list[dict[str, Any]]:
    """For each lesion (a Plan, a lesion record with "deleted", or the deleted indices), the surviving
    fraction of every path length counted from the lesion vs C(n-d, x) / C(n, x); `match` is exact."""
    rows = []
    for lesion in lesions:
        deleted = lesion["deleted"] if isinstance(lesion, dict) else lesion
        plan = deleted if isinstance(deleted, Plan) else [int(i) for i in deleted]
        d = len(plan.deleted if isinstance(plan, Plan) else set(plan))
        counted = [c / math.comb(n, x) for x, c in enumerate(count_surviving(plan, n))]
        analytic = [surviving_fraction(n, d, x) for x in range(n + 1)]
        key = lesion.get("key") if isinstance(lesion, dict) else (plan.key() if isinstance(plan, Plan) else None)
        rows.append({"key": key, "deleted": d, "counted": counted, "analytic": analytic,
                     "match": all(math.isclose(a, b, rel_tol=1e-12, abs_tol=0) for a, b in zip(counted, analytic))})
    return rows


def effective_surviving(n: int, d: int, totals: dict[int, float], lengths: tuple[int, int]) -> float:
    """The share of the effective paths' gradient left intact after deleting d random blocks."""
    ks = [k for k in totals if lengths[0] <= k <= lengths[1]]
    whole = sum(totals[k] for k in ks)
    return sum(totals[k] * surviving_fraction(n, d, k) for k in ks) / whole if whole else 0.0


# ---------------------------------------------------------------------------------------------
# The experiment, resumable: one record per length in a ResultStore


def effective_summary(n: int, records: Sequence[dict[str, Any]], share: float = 0.9) -> dict[str, Any]:
    """The effective range of lengths computed from path-gradient records (one per length)."""
    totals = total_gradient(n, {r["length"]: r["mean"] for r in records})
    return {**effective_range(n, totals, share), "measured_lengths": sorted(totals)}


def run_path_gradients(view: ResidualView, batches: Sequence[tuple[Any, Tensor]], out: str, meta: dict[str, Any],
                       lengths: Iterable[int], *, samples: int = 1000, seed: int = 0, share: float = 0.9,
                       chunk: int | None = None, confidence: float = 0.95, force: bool = False,
                       progress: bool = False, fast: bool = False) -> dict[str, Any]:
    """measure_path_gradients into out.json / out.csv, skipping the lengths a previous run finished.

    The finished file holds one record per length measured so far and, at the top level, `blocks`
    and `effective` (effective_summary of those records). Returns that document's fields."""
    if samples < 1:
        raise UserError(f"--samples must be at least 1, not {samples}.")
    n = len(view)
    lengths = list(lengths)
    bad = [k for k in lengths if not 0 <= k <= n]
    if bad or not lengths:
        raise UserError(f"path length {bad[0]} is out of range: this model has {n} blocks, so lengths are 0..{n}."
                        if bad else "no path lengths to measure; give some with --lengths, e.g. 1-10.")
    meta = {"experiment": "path-gradients", "blocks": n, "samples": samples, "seed": seed,
            "confidence": confidence, **meta}
    if fast:  # recorded only when on, so that exact result files of earlier versions still resume
        meta["fast"] = True

    # under torchrun (see respaths.distributed) rank 0 alone opens and writes the file
    ranks = distributed.init()
    store = distributed.on_main(lambda: ResultStore(out, meta, force=force))
    done = distributed.broadcast([k for k in lengths if store.done(length_key(k))] if store is not None else None)
    measure = measure_path_gradients if ranks == 1 else measure_path_gradients_sharded
    for rec in measure(view, batches, lengths, samples=samples, seed=seed, chunk=chunk,
                       confidence=confidence, skip=done, progress=progress, fast=fast):
        if store is not None:
            store.append(rec)

    def finish() -> dict[str, Any]:
        records = sorted(store.records, key=lambda r: r["length"])
        effective = effective_summary(n, records, share)
        store.finish(order=[r["key"] for r in records], blocks=n, effective=effective)
        return {"meta": store.meta, "blocks": n, "effective": effective, "records": records}

    return distributed.broadcast(distributed.on_main(finish))


def paths_main(opened: Any, *, out: str = "runs", samples: int = 1000, lengths: str = "all",
               batch_size: int = 128, batches: int = 10, seed: int = 0, share: float = 0.9,
               chunk: int | None = None, force: bool = False, progress: bool = True,
               fast: bool = False) -> dict[str, Any]:
    """`respaths paths`: path gradients of an opened model (respaths.opening.open_model, split="train")
    on its training set, into OUT/paths.json and .csv.

    The batches are the first `batches` of a seeded shuffle of the training images (no augmentation),
    preprocessed as the model expects."""
    from pathlib import Path

    v, data = opened.view, opened.data
    dev = next(v.model.parameters()).device if v.model is not None else torch.device("cpu")
    if isinstance(data, list):
        return text_paths(opened, out=out, samples=samples, lengths=lengths, batches=batches, seed=seed,
                          share=share, chunk=chunk, force=force, progress=progress, device=dev)
    gen = torch.Generator().manual_seed(seed)
    chosen = [b for _, b in zip(range(batches), data_batches(data, batch_size, dev, train=True, generator=gen))]
    n = len(v)
    ks = list(range(n + 1)) if lengths == "all" else parse_k(lengths)
    source = opened.description["source"]
    run_meta = {"source": source, "model": v.name, "dataset": data.name, "split": "train",
                "batch_size": batch_size, "batches": len(chosen), "n_images": sum(len(y) for _, y in chosen),
                "bn": "eval (running statistics)", "dtype": str(chosen[0][0].dtype).replace("torch.", "")}
    if "checkpoint" not in source:  # a brought model: how it was preprocessed, and which weights
        run_meta.update(preprocessing=opened.description["preprocessing"], fingerprint=opened.description["fingerprint"])
    return run_path_gradients(v, chosen, str(Path(out) / "paths"), run_meta, ks, samples=samples, seed=seed,
                              share=share, chunk=chunk, force=force, progress=progress, fast=fast)


def text_batches_for_paths(opened: Any, batches: int, device: torch.device) -> list[tuple[Any, Any]]:
    """(inputs, targets) of the first `batches` text batches of a Hugging Face model: for a decoder the
    targets are the batch itself (path_loss takes its next-token loss), for a classifier its labels.
    An encoder scored by embedding cosine has no loss to differentiate: the cosine to the full model
    is at its optimum, with gradient 0, on the full model's own output, so it is refused."""
    if opened.metric == "cosine":
        raise UserError("path gradients need a loss, and an encoder's embedding cosine to the full model has "
                        "gradient 0 at the full model; run respaths paths on a decoder (LM loss) or a classifier "
                        "with labelled lines ('LABEL<TAB>TEXT').")
    out = []
    for b in opened.data[:batches]:
        b = to_device(b, device)
        out.append((inputs_of(b), b if opened.metric == "lm" else b["labels"]))
    return out


def text_paths(opened: Any, *, out: str, samples: int, lengths: str, batches: int, seed: int, share: float,
               chunk: int | None, force: bool, progress: bool, device: torch.device) -> dict[str, Any]:
    """paths_main for a Hugging Face model and --text: the gradients of the LM loss (decoders) or of the
    classifier's cross-entropy at the first block's input, on the first `batches` text batches."""
    from pathlib import Path

    v = opened.view
    chosen = text_batches_for_paths(opened, batches, device)
    n = len(v)
    ks = list(range(n + 1)) if lengths == "all" else parse_k(lengths)
    d = opened.description
    run_meta = {"source": d["source"], "model": v.name, "dataset": "text", "text": d["text"],
                "seq_len": d["seq_len"], "metric": opened.metric,
                "loss": "next-token cross-entropy" if opened.metric == "lm" else "cross-entropy",
                "batches": len(chosen), "n_examples": sum(len(x["input_ids"]) for x, _ in chosen),
                "fingerprint": d["fingerprint"]}
    return run_path_gradients(v, chosen, str(Path(out) / "paths"), run_meta, ks, samples=samples, seed=seed,
                              share=share, chunk=chunk, force=force, progress=progress)
