"""Counting paths: how many of each length (section 1), the gradient all paths of a length carry
and the shortest range of lengths holding most of it (3), and which survive a lesion (4).

See respaths.paths for the whole section 5 of the paper."""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from torch import Tensor

from ..core import DELETE, RUN, Plan, UserError

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


