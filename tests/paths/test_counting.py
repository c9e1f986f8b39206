"""Path counting (respaths.paths.counting): counts, the unrolled sum, effective paths, surviving paths."""
import itertools
import math

import numpy as np
import pytest
import torch

from respaths import paths
from respaths.core import Block, ResidualView, UserError, delete_blocks

from tests.paths.helpers import tiny


# ---------------------------------------------------------------------------------------------
# 1. path lengths and the unrolled sum

def test_path_counts_and_shares():
    assert paths.path_counts(4) == [1, 4, 6, 4, 1]
    assert sum(paths.path_counts(54)) == 2 ** 54  # exact integers
    assert math.isclose(sum(paths.path_fractions(54)), 1.0)
    assert paths.path_share(54, 19, 35) > 0.95  # the paper's section 4
    assert paths.path_share(54, 5, 17) == pytest.approx(0.0045, abs=5e-5)  # 0.45%, the paper's effective paths
    assert paths.path_share(10, 0, 10) == 1.0 and paths.path_share(10, 3, 2) == 0.0


@pytest.mark.parametrize("n", [1, 5, 12])
def test_unrolled_sum_is_the_network(n):
    torch.manual_seed(n)
    ws = [0.3 * torch.randn(6, 6, dtype=torch.float64) for _ in range(n)]
    x = torch.randn(6, 3, dtype=torch.float64)
    unrolled = paths.unrolled_paths(ws, x)
    assert len(unrolled) == 2 ** n
    assert [sum(len(p) == k for p in unrolled) for k in range(n + 1)] == paths.path_counts(n)
    # the same network as a respaths view of blocks y = x + W x
    view = ResidualView(lambda t: t, [Block(branch=(lambda t, w=w: w @ t)) for w in ws], lambda t: t)
    y = view(x)
    assert torch.allclose(paths.linear_residual_forward(ws, x), y, rtol=0, atol=1e-12)
    assert torch.allclose(sum(unrolled.values()), y, rtol=1e-12, atol=1e-12)
    # each path is the product of its branches, in order
    p = tuple(range(0, n, 2))
    expected = x
    for i in p:
        expected = ws[i] @ expected
    assert torch.allclose(unrolled[p], expected, rtol=1e-12, atol=1e-12)
    # and no path can be left out
    if n > 1:
        assert not torch.allclose(sum(v for q, v in unrolled.items() if q != p), y, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 3. effective paths

def test_effective_range():
    totals = {0: 1.0, 1: 5.0, 2: 90.0, 3: 4.0}
    e = paths.effective_range(3, totals, 0.9)
    assert e["lengths"] == [2, 2] and e["gradient_share"] == pytest.approx(0.9)
    assert e["path_share"] == pytest.approx(3 / 8)
    assert paths.effective_range(3, totals, 0.95)["lengths"] == [1, 2]  # 95 beats [2, 3]'s 94
    assert paths.effective_range(3, totals, 1.0)["lengths"] == [0, 3]
    # a paper-like curve: mean norm falling geometrically with length
    n = 54
    totals = paths.total_gradient(n, {k: 0.6 ** k for k in range(n + 1)})
    e = paths.effective_range(n, totals, 0.9)
    lo, hi = e["lengths"]
    assert e["gradient_share"] >= 0.9 and lo < 20 < hi < 35
    for a in range(n + 1):  # no shorter range holds 90%
        b = a + (hi - lo) - 1
        assert sum(totals.get(k, 0.0) for k in range(a, b + 1)) < 0.9 * sum(totals.values())
    with pytest.raises(UserError):
        paths.effective_range(3, totals, 1.5)


# ---------------------------------------------------------------------------------------------
# 4. surviving paths

def test_surviving_counts_by_enumeration():
    n = 8
    rng = np.random.default_rng(0)
    for d in range(n + 1):
        gone = set(rng.choice(n, d, replace=False).tolist())
        counts = paths.count_surviving(delete_blocks(n, gone), n)
        for x in range(n + 1):
            intact = sum(1 for p in itertools.combinations(range(n), x) if not gone & set(p))
            assert counts[x] == intact
            assert intact / math.comb(n, x) == pytest.approx(paths.surviving_fraction(n, d, x), rel=1e-12)


def test_surviving_checked_against_lesion_plans():
    from respaths.experiments.lesion import random_plans
    view, x, _ = tiny("preresnet20")
    n = len(view)
    specs = random_plans(view, [1, 3, 5], samples=3, seed=0)
    rows = paths.check_surviving(n, [sp.record for sp in specs])  # the records the lesion step writes
    rows_from_plans = paths.check_surviving(n, [sp.plan for sp in specs])
    assert len(rows) == 9 and all(r["match"] for r in rows + rows_from_plans)
    assert [r["deleted"] for r in rows] == [1] * 3 + [3] * 3 + [5] * 3
    assert rows[3]["counted"][2] == pytest.approx(math.comb(n - 3, 2) / math.comb(n, 2))
    assert [r["counted"] for r in rows] == [r["counted"] for r in rows_from_plans]  # record == plan run
    assert paths.effective_surviving(54, 0, {10: 1.0, 12: 2.0}, (5, 17)) == 1.0
    assert 0 < paths.effective_surviving(54, 10, {10: 1.0, 12: 2.0}, (5, 17)) < paths.surviving_fraction(54, 10, 5)
