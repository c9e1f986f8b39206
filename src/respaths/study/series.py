"""A depth series: the paper's claims measured on nets of one family at several depths, each claim's
statistic against the number of blocks n, with intervals, a fitted trend and its prediction at the paper's
54 blocks. Plain numbers in (`Net`, one per depth), plain numbers out (`Row`, one per statistic); the
figures are drawn in respaths.study.figures and the HTML written in respaths.study.report.

Intervals (95%, percentile bootstrap, seeded) resample what varies in each statistic, as far as the
result files hold it. They hold counts per deletion, not each image's answer:
  - a quantile or share over blocks (the single-deletion median, quartiles, share within the rule):
    over the non-downsampling blocks;
  - the worst block's cost, a per-image statistic of one deletion: over the images, drawn from that
    deletion's counts of images it made wrong and right (which is exactly the image bootstrap of it);
  - random deletion: over the random sets of each k; reordering's ρ: over the shuffled orders;
  - the path statistics: each length's mean gradient drawn from its sampling error (the paths sampled,
    not the few training batches, which stay fixed).

Trends are least-squares lines in a transformed space (TREND_MODELS); the prediction interval at 54 blocks
is the textbook one, with a t on (nets - 2) degrees of freedom, so three nets give a wide one.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats as sps

from .. import paths
from ..io.layout import ResultFolder, RunLayout, json_of
from ..metrics import ClassifierError
from .claims import RULES
from .read import Study, fields_of, read_json

PAPER_BLOCKS = 54  # the paper's ResNet-110 on CIFAR-10: 54 residual blocks
LEVEL = 0.95
BOOTSTRAP = 2000
RANDOM_AT = 0.2  # the random-k curve's summary: its rise with this share of the blocks deleted


@dataclass
class Net:
    """One net of the series, as plain numbers (errors are fractions)."""

    label: str
    blocks: int
    downsample: list[bool]
    chance: float
    baseline: float                      # the whole net's error
    n_images: int
    single: list[float | None]           # error after deleting each block alone (None: not deletable)
    # per block (images the deletion made wrong, made right); None where the result files lack them
    single_changes: list[tuple[int, int] | None] | None = None
    random: dict[int, list[float]] = field(default_factory=dict)  # k -> the error of each random set
    tau: list[float] = field(default_factory=list)                # reordering: Kendall τ of each order
    reorder_error: list[float] = field(default_factory=list)
    path_lengths: list[int] = field(default_factory=list)
    path_mean: list[float] = field(default_factory=list)          # mean gradient norm of one path per length
    path_se: list[float] = field(default_factory=list)            # its standard error
    # what else the net is: dataset, preprocessing, training, family, budget (compared across the series)
    about: dict[str, str] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return self.chance - self.baseline


@dataclass
class Estimate:
    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class TrendModel:
    name: str
    formula: str
    x: Callable[[float], float]
    y: Callable[[float], float]      # into the fitted space
    back: Callable[[float], float]   # out of it
    why: str


TREND_MODELS = {
    "power": TrendModel("power law", "log y = a + b·log n", math.log, math.log, math.exp,
                        "a positive cost or factor; if each of n blocks were an equal member of an ensemble, "
                        "one block's share would fall like 1/n, a power of n, and it stays positive"),
    "log-linear": TrendModel("linear in log n", "y = a + b·log n", math.log, lambda y: y, lambda y: y,
                             "a bounded share or correlation with no law to follow: the plainest line, with "
                             "doublings of depth as equal steps; the prediction is clipped to its range"),
    "linear": TrendModel("linear in n", "y = a + b·n", lambda n: float(n), lambda y: y, lambda y: y,
                         "a path length: the lengths of all paths centre on n/2, so a range of them moves in "
                         "proportion to n"),
    "exponential": TrendModel("exponential in n", "log y = a + b·n", lambda n: float(n), math.log, math.exp,
                              "a share of the 2^n paths in a range of lengths below n/2, which falls "
                              "exponentially with n as the binomial distribution of path lengths narrows"),
}


@dataclass
class Trend:
    model: str
    a: float | None = None
    b: float | None = None
    prediction: Estimate | None = None  # at `at` blocks, with its prediction interval
    at: int = PAPER_BLOCKS
    note: str = ""


@dataclass
class Row:
    """One statistic of the series: its value per net and the trend."""

    key: str
    claim: str      # the claim it measures (the key of respaths.study.claims)
    label: str
    unit: str       # "pp", "share", "rho", "factor", "blocks"
    interval: str   # what the interval resamples
    values: list[Estimate]
    trend: Trend
    bounds: tuple[float, float] | None = None


# ---------------------------------------------------------------------------------------------
# The statistics of one net

def single_costs(net: Net) -> list[tuple[int, float]]:
    """(block, error increase) of each non-downsampling block deleted alone."""
    return [(i, e - net.baseline) for i, (e, d) in enumerate(zip(net.single, net.downsample))
            if e is not None and not d]


def quantile(values: Sequence[float], q: float) -> float:
    """numpy's default (linear) quantile, the same in the point estimate and the bootstrap."""
    return float(np.quantile(np.asarray(values, dtype=float), q))


def share_within(costs: Sequence[float], limit: float) -> float:
    return sum(c <= limit for c in costs) / len(costs)


def single_limit(net: Net) -> float:
    return RULES["single_gap"] * net.gap


def percentile_interval(draws: np.ndarray) -> tuple[float | None, float | None]:
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return None, None
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def bootstrap_over(values: Sequence[float], fn: Callable[[np.ndarray], np.ndarray], rng: np.random.Generator,
                   reps: int) -> tuple[float | None, float | None]:
    """Percentile interval of fn over `reps` resamples (with replacement) of values; fn maps an array of
    resamples (reps x len) to one number per resample."""
    v = np.asarray(values, dtype=float)
    return percentile_interval(fn(v[rng.integers(0, len(v), size=(reps, len(v)))]))


def image_bootstrap_delta(changes: tuple[int, int], n: int, rng: np.random.Generator, reps: int) -> np.ndarray:
    """The error increase of one deletion over `reps` resamples of its n test images: each image either
    became wrong, became right or kept its answer, so a resample of images is a multinomial draw of those
    three counts."""
    wrong, right = changes
    draws = rng.multinomial(n, [wrong / n, right / n, (n - wrong - right) / n], size=reps)
    return (draws[:, 0] - draws[:, 1]) / n


def random_curve(net: Net) -> tuple[list[float], list[float]]:
    """k/n and the mean error over the random sets, from k = 0 (the whole net)."""
    ks = sorted(net.random)
    return [0.0] + [k / net.blocks for k in ks], [net.baseline] + [float(np.mean(net.random[k])) for k in ks]


def rise_at(net: Net, means: dict[int, Any], x: float = RANDOM_AT) -> Any:
    """The rise of the mean error over the whole net with a share x of the blocks deleted, as a share of the
    gap to chance, linear between the measured k (k = 0: no rise); None beyond the largest k measured.
    The means may be arrays of resamples (one rise per resample)."""
    ks = [0] + sorted(means)
    k0 = x * net.blocks
    if k0 > ks[-1]:
        return None
    j = next(i for i in range(1, len(ks)) if ks[i] >= k0)
    lo, hi = ks[j - 1], ks[j]
    y_lo = 0.0 if lo == 0 else means[lo] - net.baseline
    y_hi = means[hi] - net.baseline
    return (y_lo + (k0 - lo) / (hi - lo) * (y_hi - y_lo)) / net.gap


def gradient_factor(lengths: Sequence[int], mean: Sequence[float]) -> float:
    """×(this) per extra block: 10^slope of a least-squares line through log10(mean gradient) by length."""
    good = [(k, m) for k, m in zip(lengths, mean) if m > 0]
    x = np.array([k for k, _ in good], dtype=float)
    y = np.log10([m for _, m in good])
    return float(10 ** np.polyfit(x, y, 1)[0])


def effective(n: int, lengths: Sequence[int], mean: Sequence[float]) -> dict[str, Any]:
    totals = paths.total_gradient(n, dict(zip(lengths, mean)))
    eff = paths.effective_range(n, totals, RULES["effective_share"])
    return {"totals": totals, "low": eff["lengths"][0], "high": eff["lengths"][1], "paths_share": eff["path_share"]}


def r_squared(x: Sequence[float], y: Sequence[float]) -> float:
    """R² of a least-squares line: the squared Pearson r (nan where either side is constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row pair of x and y (reps x m): Pearson's r of the ranks, nan for a constant row."""
    rx, ry = sps.rankdata(x, axis=1), sps.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / np.where(den > 0, den, 1), np.nan)


def draw_path_means(net: Net, rng: np.random.Generator, reps: int) -> np.ndarray:
    """reps x lengths draws of each length's mean gradient from its sampling error, on the log scale so that
    a mean stays positive (the delta method: sd of log m = se / m)."""
    m = np.asarray(net.path_mean, dtype=float)
    se = np.asarray(net.path_se, dtype=float)
    sd = np.where(m > 0, se / np.where(m > 0, m, 1), 0.0)
    return m * np.exp(rng.normal(size=(reps, len(m))) * sd)


def draw_random_means(net: Net, rng: np.random.Generator, reps: int) -> dict[int, np.ndarray]:
    """k -> reps resamples of the random sets of that k, as their mean error."""
    out = {}
    for k in sorted(net.random):
        v = np.asarray(net.random[k], dtype=float)
        out[k] = v[rng.integers(0, len(v), size=(reps, len(v)))].mean(axis=1)
    return out


def surviving_matrix(net: Net, ks: Sequence[int]) -> np.ndarray:
    """[k, x]: the share of the length-x paths that deleting k of the n blocks leaves, C(n−k, x)/C(n, x), for
    the measured path lengths x."""
    return np.array([[paths.surviving_fraction(net.blocks, k, x) for x in net.path_lengths] for k in ks])


def effective_lost(net: Net, left: np.ndarray, totals: Sequence[float], low: int, high: int) -> np.ndarray:
    """Per k (the rows of `left`, surviving_matrix), the share of the effective range's gradient that deleting
    k random blocks removes: 1 − Σ T_x C(n−k, x)/C(n, x) / Σ T_x over the lengths x of the range."""
    lengths = np.asarray(net.path_lengths)
    t = np.asarray(totals, dtype=float) * ((lengths >= low) & (lengths <= high))
    return 1 - left @ t / t.sum()


def net_statistics(net: Net, seed: int = 0, reps: int = BOOTSTRAP) -> dict[str, Estimate]:
    """Every statistic of the series for one net, with its interval; a statistic the net lacks the results
    for is Estimate(None)."""
    rng = np.random.default_rng(seed)
    out: dict[str, Estimate] = {}
    costs = single_costs(net)
    if costs:
        c = np.array([v for _, v in costs])
        limit = single_limit(net)
        for key, q in (("median", 0.5), ("q1", 0.25), ("q3", 0.75)):
            lo, hi = bootstrap_over(c, lambda s, q=q: np.quantile(s, q, axis=1), rng, reps)
            out[f"single_{key}_pp"] = Estimate(quantile(c, q), lo, hi)
            out[f"single_{key}_gap"] = Estimate(quantile(c, q) / net.gap, *(None if x is None else x / net.gap
                                                                             for x in (lo, hi)))
        i_worst, worst = max(costs, key=lambda t: t[1])
        ch = net.single_changes[i_worst] if net.single_changes else None
        lo = hi = None
        if ch is not None:
            lo, hi = percentile_interval(image_bootstrap_delta(ch, net.n_images, rng, reps))
        out["single_worst_pp"] = Estimate(worst, lo, hi)
        out["single_worst_gap"] = Estimate(worst / net.gap, *(None if x is None else x / net.gap for x in (lo, hi)))
        lo, hi = bootstrap_over(c, lambda s: (s <= limit).mean(axis=1), rng, reps)
        out["single_within"] = Estimate(share_within(c, limit), lo, hi)
    if net.random:
        means = {k: float(np.mean(v)) for k, v in net.random.items()}
        point = rise_at(net, means)
        out["random_rise"] = (Estimate(float(point), *percentile_interval(rise_at(net, draw_random_means(net, rng, reps))))
                              if point is not None else Estimate(None))
    if len(net.tau) >= 5:
        tau, err = np.asarray(net.tau), np.asarray(net.reorder_error)
        idx = rng.integers(0, len(tau), size=(reps, len(tau)))
        boot = spearman_rows(tau[idx], err[idx])  # a resample of equal values has no ρ: nan, left out
        out["reorder_rho"] = Estimate(float(sps.spearmanr(tau, err)[0]), *percentile_interval(boot))
    if len(net.path_lengths) >= 3:
        drawn = draw_path_means(net, rng, reps)
        eff = effective(net.blocks, net.path_lengths, net.path_mean)
        effs = [effective(net.blocks, net.path_lengths, d) for d in drawn]
        out["gradient_factor"] = Estimate(gradient_factor(net.path_lengths, net.path_mean), *percentile_interval(
            np.array([gradient_factor(net.path_lengths, d) for d in drawn])))
        for key in ("low", "high", "paths_share"):
            out[f"effective_{key}"] = Estimate(float(eff[key]), *percentile_interval(
                np.array([e[key] for e in effs], dtype=float)))
        if len(net.random) >= 3:
            ks = sorted(net.random)
            left = surviving_matrix(net, ks)

            def r2(means: Sequence[float], e: dict[str, Any]) -> float:
                return r_squared(effective_lost(net, left, [e["totals"][x] for x in net.path_lengths], e["low"],
                                                e["high"]), means)
            point = r2([float(np.mean(net.random[k])) for k in ks], eff)
            drawn_means = draw_random_means(net, rng, reps)
            boot = np.array([r2([drawn_means[k][i] for k in ks], e) for i, e in enumerate(effs)], dtype=float)
            out["surviving_r2"] = Estimate(point, *percentile_interval(boot))
    return out


# ---------------------------------------------------------------------------------------------
# Trends

def fit_trend(ns: Sequence[int], ys: Sequence[float], model: str, at: int = PAPER_BLOCKS,
              bounds: tuple[float, float] | None = None) -> Trend:
    """Least squares of model.y(y) on model.x(n); the prediction at `at` blocks with its 95% prediction
    interval ŷ ± t(m−2) · s · √(1 + 1/m + (x0 − x̄)² / Sxx), mapped back (and clipped to bounds)."""
    m = TREND_MODELS[model]
    pts = [(n, y) for n, y in zip(ns, ys) if y is not None and math.isfinite(y)]
    if m.y is math.log and any(y <= 0 for _, y in pts):
        return Trend(model, note="no fit: a value is not positive, and this model needs positive ones")
    if len({n for n, _ in pts}) < 2:
        return Trend(model, note="no fit: needs nets of at least two depths")
    x = np.array([m.x(n) for n, _ in pts])
    y = np.array([m.y(v) for _, v in pts])
    b, a = np.polyfit(x, y, 1)
    x0 = m.x(at)
    y0 = a + b * x0
    k = len(pts)
    clip = (lambda v: min(max(v, bounds[0]), bounds[1])) if bounds else (lambda v: v)
    if k < 3:
        return Trend(model, float(a), float(b), Estimate(clip(m.back(y0))), at,
                     note="no prediction interval: needs nets of at least three depths")
    resid = y - (a + b * x)
    s = math.sqrt(float(resid @ resid) / (k - 2))
    sxx = float(((x - x.mean()) ** 2).sum())
    half = float(sps.t.ppf((1 + LEVEL) / 2, k - 2)) * s * math.sqrt(1 + 1 / k + (x0 - x.mean()) ** 2 / sxx)
    pred = Estimate(clip(m.back(y0)), clip(m.back(y0 - half)), clip(m.back(y0 + half)))
    note = f"{k - 2} degree{'s' if k != 3 else ''} of freedom" + (" (clipped to its range)" if bounds and (
        pred.low in bounds or pred.high in bounds or pred.value in bounds) else "")
    return Trend(model, float(a), float(b), pred, at, note)


def trend_value(t: Trend, n: float) -> float | None:
    """The fitted line at n blocks (for drawing it)."""
    if t.a is None:
        return None
    m = TREND_MODELS[t.model]
    return m.back(t.a + t.b * m.x(n))


# (key, claim, label, unit, interval, trend model, bounds)
STATISTICS: list[tuple[str, str, str, str, str, str, tuple[float, float] | None]] = [
    # an error increase cannot pass 100 pp
    ("single_median_pp", "single", "single deletion: median cost", "pp", "blocks", "power", (0.0, 1.0)),
    ("single_q1_pp", "single", "single deletion: lower quartile", "pp", "blocks", "power", (0.0, 1.0)),
    ("single_q3_pp", "single", "single deletion: upper quartile", "pp", "blocks", "power", (0.0, 1.0)),
    ("single_worst_pp", "single", "single deletion: the worst block", "pp", "images", "power", (0.0, 1.0)),
    ("single_median_gap", "single", "single deletion: median cost, share of the gap to chance", "share", "blocks",
     "power", (0.0, 1.0)),
    ("single_q1_gap", "single", "single deletion: lower quartile, share of the gap", "share", "blocks", "power",
     (0.0, 1.0)),
    ("single_q3_gap", "single", "single deletion: upper quartile, share of the gap", "share", "blocks", "power",
     (0.0, 1.0)),
    ("single_worst_gap", "single", "single deletion: the worst block, share of the gap", "share", "images", "power",
     (0.0, 1.0)),
    ("single_within", "single", f"share of blocks within the rule ({100 * RULES['single_gap']:.0f}% of the gap)",
     "share", "blocks", "log-linear", (0.0, 1.0)),
    ("random_rise", "random", f"random deletion: rise at k/n = {RANDOM_AT:g}, share of the gap", "share",
     "random sets", "log-linear", (0.0, 1.0)),
    ("reorder_rho", "reorder", "reordering: Spearman ρ(τ, error)", "rho", "orders", "log-linear", (-1.0, 1.0)),
    ("gradient_factor", "gradient", "gradient factor per extra block", "factor", "sampled paths", "power", None),
    ("effective_low", "effective", "effective range: shortest length", "blocks", "sampled paths", "linear",
     (0.0, math.inf)),
    ("effective_high", "effective", "effective range: longest length", "blocks", "sampled paths", "linear",
     (0.0, math.inf)),
    ("effective_paths_share", "effective", "effective range: share of all paths", "share", "sampled paths",
     "exponential", (0.0, 1.0)),
    ("surviving_r2", "surviving", "surviving paths: R² of error vs effective gradient lost", "share",
     "random sets and sampled paths", "log-linear", (0.0, 1.0)),
]


def series(nets: Sequence[Net], seed: int = 0, reps: int = BOOTSTRAP, at: int = PAPER_BLOCKS) -> list[Row]:
    """The series table: one Row per statistic, the nets in order of depth."""
    nets = sorted(nets, key=lambda n: n.blocks)
    per_net = [net_statistics(n, seed=seed + i, reps=reps) for i, n in enumerate(nets)]
    rows = []
    for key, claim, label, unit, interval, model, bounds in STATISTICS:
        values = [s.get(key, Estimate(None)) for s in per_net]
        if all(v.value is None for v in values):
            continue
        trend = fit_trend([n.blocks for n in nets], [v.value for v in values], model, at, bounds)
        rows.append(Row(key, claim, label, unit, interval, values, trend, bounds))
    return rows


def differences(nets: Sequence[Net]) -> list[str]:
    """What, besides depth, differs between the nets (one phrase per attribute), from their `about`."""
    out = []
    for what in dict.fromkeys(k for n in nets for k in n.about):
        seen = list(dict.fromkeys(n.about.get(what, "unknown") for n in nets))
        if len(seen) > 1:
            out.append(f"{what}: " + " / ".join(f"{n.label} {n.about.get(what, 'unknown')}" for n in nets))
    return out


def random_curve_band(net: Net, seed: int = 0, reps: int = BOOTSTRAP) -> dict[str, list[float]]:
    """The random-deletion curve against k/n from k = 0, with a 95% interval per k over the random sets."""
    rng = np.random.default_rng(seed)
    x, mean = random_curve(net)
    low, high = [net.baseline], [net.baseline]
    for k in sorted(net.random):
        v = np.asarray(net.random[k], dtype=float)
        lo, hi = percentile_interval(v[rng.integers(0, len(v), size=(reps, len(v)))].mean(axis=1))
        low.append(lo)
        high.append(hi)
    return {"x": x, "mean": mean, "low": low, "high": high}


# ---------------------------------------------------------------------------------------------
# A study as one net of a depth series

def series_net(study: Study) -> Net | None:
    """The residual net of a classifier's study as plain numbers for the depth series, with the details
    the series' intervals need from the result files (each deletion's changed images, each random set's
    error); None for a study without single-deletion results or with a metric other than test error."""
    m, s = study.models.get("resnet"), study.single.get("resnet")
    chance = ClassifierError.guessing(study.dataset.get("num_classes"))
    if not isinstance(study.scored_by(), ClassifierError) or not m or not s or chance is None:
        return None
    run = RunLayout(study.dir)
    single_file, random_file = ((json_of(run.compared("resnet", "single")), json_of(run.compared("resnet", "random")))
                                if run.run_json.exists() else
                                (ResultFolder(run.root).file("lesion-single"), ResultFolder(run.root).file("lesion-random")))
    changes: list[tuple[int, int] | None] | None = None
    n_images = int(study.dataset.get("n_test") or 0)
    doc = read_json(single_file)
    if doc:
        with fields_of(single_file):
            changes = [None] * m["blocks"]
            for r in doc["records"]:
                if r["kind"] == "single":
                    changes[r["deleted"][0]] = (int(r["newly_wrong"]), int(r["newly_right"]))
            n_images = int(doc["baseline"]["n"])
    sets: dict[int, list[float]] = {}
    doc = read_json(random_file)
    if doc:
        with fields_of(random_file):
            for r in doc["records"]:
                if r["kind"] == "random":
                    sets.setdefault(int(r["k"]), []).append(float(r["error"]))
    p = study.paths or {}
    # the standard error of each length's mean, from its 95% interval (mean ± 1.96 se)
    se = [(hi - lo) / (2 * 1.959964) for lo, hi in zip(p.get("low", []), p.get("high", []))]
    r = study.reorder.get("resnet") or {}
    settings = study.preset_settings or {}
    source = m.get("source") or {}
    pre = study.dataset.get("preprocessing") or {}
    training = m.get("training") or {}
    about = {
        "dataset": str(study.dataset.get("label", study.dataset.get("name"))),
        "test images": f"{n_images:,}",
        "preprocessing": str(pre.get("normalize") or pre.get("mean") or "as trained") if pre else "as trained",
        "family": re.sub(r"\d+", "", str(m.get("name", "?"))) or "?",
        "training": (f"{training['epochs']} epochs in respaths" if training.get("epochs")
                     else "published weights" + (f" ({Path(str(source['weights'])).parent.name})"
                                                 if source.get("weights") else "") if source else "unknown"),
        "budget": str((settings.get("budget") or {}).get("name") or settings.get("name") or "?"),
    }
    return Net(label=f"{m.get('name', 'resnet')} ({m['blocks']} blocks)", blocks=int(m["blocks"]),
               downsample=list(m["downsample"]), chance=chance, baseline=float(s["baseline"]),
               n_images=n_images, single=list(s["errors"]), single_changes=changes, random=sets,
               tau=list(r.get("tau", [])), reorder_error=list(r.get("error", [])),
               path_lengths=list(p.get("lengths", [])), path_mean=list(p.get("mean", [])), path_se=se, about=about)
