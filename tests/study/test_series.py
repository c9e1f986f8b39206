"""The depth series (respaths.study.series): every statistic and the fitted trend against a direct
computation, on hand-built runs of tiny nets of three depths (synthetic_run.write_depth_run)."""
from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path
import statistics

import numpy as np
import pytest
from scipy import stats as sps

from respaths import cli
from respaths.core import UserError
from respaths.study import series as S
from respaths.study.read import load_study
from respaths.study.series import series_net

from tests.study.synthetic_run import depth_costs, depth_downsample, write_depth_run

DEPTHS = (5, 9, 17)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("depths")
    return {n: write_depth_run(root / f"n{n}", n) for n in DEPTHS}


@pytest.fixture(scope="module")
def nets(runs):
    return {n: series_net(load_study(d)) for n, d in runs.items()}


def costs_of(n):
    """The non-downsampling blocks' costs as the run files hold them (whole images)."""
    return [round(c * 1000) / 1000 for i, c in enumerate(depth_costs(n)) if i not in depth_downsample(n)]


def test_the_reader_gives_the_runs_numbers(nets):
    net = nets[9]
    assert net.blocks == 9 and net.baseline == 0.1 and net.chance == pytest.approx(0.9) and net.n_images == 1000
    assert [c for _, c in S.single_costs(net)] == pytest.approx(costs_of(9))
    assert net.single_changes[2] == (100 + 7, 7)  # the images block 2's deletion turned wrong and right
    assert net.random[3] == pytest.approx([0.1 + 0.8 * (1 - 2 ** -3) + 0.01 * s for s in range(3)])
    assert net.path_se == pytest.approx([0.1 * 0.5 ** k for k in range(10)])


@pytest.mark.parametrize("n", DEPTHS)
def test_each_statistic_equals_a_direct_computation(nets, n):
    net = nets[n]
    got = S.net_statistics(net, reps=200)
    costs = sorted(costs_of(n))
    gap = 0.9 - 0.1

    def linear_quantile(xs, q):  # the textbook linear interpolation between order statistics
        h = (len(xs) - 1) * q
        lo = math.floor(h)
        return xs[lo] + (h - lo) * (xs[min(lo + 1, len(xs) - 1)] - xs[lo])

    assert got["single_median_pp"].value == pytest.approx(statistics.median(costs))
    assert got["single_q1_pp"].value == pytest.approx(linear_quantile(costs, 0.25))
    assert got["single_q3_pp"].value == pytest.approx(linear_quantile(costs, 0.75))
    assert got["single_worst_pp"].value == pytest.approx(max(costs))
    assert got["single_median_gap"].value == pytest.approx(statistics.median(costs) / gap)
    assert got["single_worst_gap"].value == pytest.approx(max(costs) / gap)
    assert got["single_within"].value == pytest.approx(sum(c <= 0.05 * gap for c in costs) / len(costs))
    # random deletion: the mean rise at k = 0.2 n, linear between the measured k (k = 0: no rise)
    def rise(k):
        return 0.0 if k == 0 else 0.8 * (1 - 2.0 ** -k) + 0.01
    k0 = 0.2 * n
    lo = math.floor(k0)
    direct = rise(lo) + (k0 - lo) * (rise(lo + 1) - rise(lo))
    assert got["random_rise"].value == pytest.approx(direct / gap)
    # reordering: Pearson's r of the ranks
    r = np.corrcoef(sps.rankdata(net.tau), sps.rankdata(net.reorder_error))[0, 1]
    assert got["reorder_rho"].value == pytest.approx(r)
    # path gradients 0.5^k: half per block; the effective range by brute force over all ranges
    assert got["gradient_factor"].value == pytest.approx(0.5)
    totals = [math.comb(n, k) * 0.5 ** k for k in range(n + 1)]
    ranges = [(b - a, -sum(totals[a:b + 1]), a, b) for a in range(n + 1) for b in range(a, n + 1)
              if sum(totals[a:b + 1]) >= 0.9 * sum(totals) * (1 - 1e-12)]
    _, _, a, b = min(ranges)
    assert (got["effective_low"].value, got["effective_high"].value) == (a, b)
    assert got["effective_paths_share"].value == pytest.approx(sum(math.comb(n, k) for k in range(a, b + 1)) / 2 ** n)
    ks = sorted(net.random)
    lost = [1 - sum(totals[x] * math.comb(n - k, x) / math.comb(n, x) for x in range(a, b + 1)) / sum(totals[a:b + 1])
            for k in ks]
    means = [statistics.mean(net.random[k]) for k in ks]
    assert got["surviving_r2"].value == pytest.approx(np.corrcoef(lost, means)[0, 1] ** 2)


def test_the_intervals_equal_the_exact_bootstraps(nets):
    net = nets[9]  # 7 non-downsampling blocks: one cost within the rule (0.033 <= 0.04), six beyond it
    got = S.net_statistics(net, reps=4000)
    costs = np.array(costs_of(9))
    # over blocks: all 7^7 resamples of the 7 blocks, each equally likely
    every = costs[np.array(list(itertools.product(range(7), repeat=7)))]
    exact = np.quantile(np.median(every, axis=1), [0.025, 0.975])
    assert (got["single_median_pp"].low, got["single_median_pp"].high) == pytest.approx(tuple(exact))
    # the share within is a binomial (7, 1/7) share: its 2.5% and 97.5% points
    assert (got["single_within"].low, got["single_within"].high) == pytest.approx(
        (sps.binom.ppf(0.025, 7, 1 / 7) / 7, sps.binom.ppf(0.975, 7, 1 / 7) / 7))
    # over images, the worst block (block 2: 107 images turned wrong, 7 right of 1,000): the normal
    # approximation of the paired difference's sampling distribution
    pw, pr = 107 / 1000, 7 / 1000
    se = math.sqrt((pw + pr - (pw - pr) ** 2) / 1000)
    assert got["single_worst_pp"].low == pytest.approx(0.1 - 1.96 * se, abs=0.002)
    assert got["single_worst_pp"].high == pytest.approx(0.1 + 1.96 * se, abs=0.002)
    # the path statistics from each length's 10% sampling error: a factor near 0.5, an interval around it
    g = got["gradient_factor"]
    assert g.low < 0.5 < g.high and g.high - g.low < 0.05
    # random sets: 3 per k, errors s = 0, 1, 2 pp apart; at k/n = 0.2 (k = 1.8) the rise moves by at most 1 pp
    r = got["random_rise"]
    assert r.low < r.value < r.high and (r.high - r.low) * 0.8 <= 0.02 + 1e-9


def test_the_trend_and_its_prediction_interval_equal_a_direct_fit():
    ns, ys = [9, 15, 27, 40], [0.199, 0.093, 0.026, 0.02]
    t = S.fit_trend(ns, ys, "power")
    x, y = np.log(ns), np.log(ys)
    X = np.column_stack([np.ones_like(x), x])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    assert (t.a, t.b) == pytest.approx(tuple(beta))
    resid = y - X @ beta
    s2 = resid @ resid / (len(ns) - 2)
    x0 = np.array([1.0, math.log(54)])
    half = sps.t.ppf(0.975, len(ns) - 2) * math.sqrt(s2 * (1 + x0 @ np.linalg.inv(X.T @ X) @ x0))
    p = t.prediction
    assert (p.value, p.low, p.high) == pytest.approx((math.exp(x0 @ beta), math.exp(x0 @ beta - half),
                                                      math.exp(x0 @ beta + half)))
    assert S.trend_value(t, 54) == pytest.approx(p.value)
    # linear in log n, clipped to its range
    t = S.fit_trend([9, 15, 27], [0.0, 0.15, 0.6], "log-linear", bounds=(0.0, 1.0))
    b, a = np.polyfit(np.log([9, 15, 27]), [0.0, 0.15, 0.6], 1)
    assert (t.a, t.b) == pytest.approx((a, b))
    assert t.prediction.value == pytest.approx(min(1.0, a + b * math.log(54)))
    assert 0.0 <= t.prediction.low <= t.prediction.value <= t.prediction.high <= 1.0
    # exponential in n
    t = S.fit_trend([9, 15, 27], [0.89, 0.85, 0.3], "exponential")
    b, a = np.polyfit([9, 15, 27], np.log([0.89, 0.85, 0.3]), 1)
    assert t.prediction.value == pytest.approx(math.exp(a + 54 * b))
    # two depths: a line, no interval; a non-positive value: no power law
    assert S.fit_trend([9, 15], [0.2, 0.1], "power").prediction.low is None
    assert S.fit_trend([9, 15, 27], [0.2, 0.1, 0.0], "power").prediction is None


def test_series_rows_fit_the_nets_values(nets):
    rows = S.series(list(nets.values()), reps=100)
    assert {r.key for r in rows} == {key for key, *_ in S.STATISTICS}
    for r in rows:
        model, bounds = next((m, b) for key, *_, m, b in S.STATISTICS if key == r.key)
        direct = S.fit_trend(DEPTHS, [v.value for v in r.values], model, bounds=bounds)
        assert r.trend.prediction.value == pytest.approx(direct.prediction.value), r.key
    assert S.differences(list(nets.values())) == []


def test_report_writes_the_series_and_a_fourth_net_joins(runs, tmp_path, capsys):
    out = tmp_path / "series"
    assert cli.main(["report", *map(str, runs.values()), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "Depth series" in html and "differ in more than depth" not in html
    stems = ["series-single", "series-within", "series-random", "series-reorder", "series-gradient",
             "series-effective", "series-surviving"]
    assert all((out / "figures" / f"{s}.svg").is_file() and (out / "figures" / f"{s}.png").is_file() for s in stems)
    doc = json.loads((out / "series.json").read_text())
    assert [n["blocks"] for n in doc["nets"]] == list(DEPTHS)
    row = next(s for s in doc["statistics"] if s["key"] == "single_median_pp")
    assert row["values"][1]["value"] == pytest.approx(statistics.median(costs_of(9)))
    assert row["trend"]["prediction"]["low"] <= row["trend"]["prediction"]["value"] <= row["trend"]["prediction"]["high"]
    assert "at 54 blocks (extrapolation)" in html
    # a fourth net, of another depth and fewer test images: one more column, and a line that says the nets
    # differ in more than depth
    fourth = write_depth_run(tmp_path / "n13", 13, images=500)
    out4 = tmp_path / "series4"
    assert cli.main(["report", *map(str, runs.values()), str(fourth), "--out", str(out4)]) == 0
    doc = json.loads((out4 / "series.json").read_text())
    assert [n["blocks"] for n in doc["nets"]] == [5, 9, 13, 17]
    assert all(len(s["values"]) == 4 for s in doc["statistics"])
    html = (out4 / "report.html").read_text()
    assert "differ in more than depth" in html and "test images" in html and "500" in html
    # several runs into a run directory would overwrite its report: refused before anything is written
    before = (runs[5] / "run.json").read_text()
    with pytest.raises(UserError, match="is a run directory"):
        from respaths.study.report import build
        build([runs[5], runs[9]], runs[5])
    assert not (runs[5] / "report.html").exists() and (runs[5] / "run.json").read_text() == before


def test_the_committed_runs_give_the_committed_series(tmp_path):
    """The README's depth numbers: `respaths report` on the three committed paper runs (docs/runs) gives
    the committed series.json again, so a change in the reader, a statistic or a trend shows up here."""
    root = Path(__file__).resolve().parents[2] / "docs" / "runs"
    names = ["r20-paper", "r32-paper", "r56-paper"]
    if not all((root / n / "run.json").is_file() for n in names):
        pytest.skip("the committed paper runs are not in this checkout")
    for n in names:  # copies: report must not touch the committed folders
        shutil.copytree(root / n, tmp_path / n)
    out = tmp_path / "depth-series"
    assert cli.main(["report", *(str(tmp_path / n) for n in names), "--out", str(out)]) == 0
    got = json.loads((out / "series.json").read_text())
    want = json.loads((root / "depth-series" / "series.json").read_text())
    assert [n["blocks"] for n in got["nets"]] == [9, 15, 27]
    assert got == want
    single = next(s for s in got["statistics"] if s["key"] == "single_median_pp")
    assert [round(100 * v["value"], 2) for v in single["values"]] == [19.71, 8.47, 2.97]  # the README's medians
