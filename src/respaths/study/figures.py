"""The paper's figures, drawn from plain numbers (never from models): matplotlib, Agg, PNG + SVG.

Each function takes what its figure shows as lists of numbers plus a `subtitle` naming the model,
the dataset and the number of images, and returns a matplotlib Figure; respaths.drawing.save(fig, prefix)
writes prefix.png and prefix.svg atomically. Errors are fractions in the inputs and percent on the axes.
fig. 3 and 5 take an `axis` (Axis: what the y values are): test error by default, LM loss or
1 - embedding cosine for transformers (respaths.study.claims.metric_axis), plotted as given.

  single_deletion    fig. 3   test error after deleting each block alone, residual vs VGG
  random_deletion    fig. 5a  test error vs number of randomly deleted blocks, mean and spread
  reorder            fig. 5b  test error vs Kendall tau of the shuffled block order
  paths              fig. 6   path-length distribution, gradient per length (log), total gradient
  surviving_paths    fig. 7   share of paths of each length left after d deletions
  stochastic_depth   fig. 8   single deletion with and without stochastic depth (and fixed-m)
  depth_series       a claim's statistics against the number of blocks, with the fitted trend and its
                     extrapolation (dashed) to the paper's 54 blocks (respaths.study.series)
  random_k_series    the random-deletion curves of nets of several depths, error against k/n
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..drawing import new_figure
from matplotlib.figure import Figure  # noqa: E402  (after drawing, which makes matplotlib draw to files only)
from matplotlib.ticker import NullLocator  # noqa: E402

PALETTE = {"residual": "#1f77b4", "vgg": "#d62728", "stochastic": "#2ca02c", "fixed": "#9467bd",
           "other": "#7f7f7f"}
DOWNSAMPLE_COLOR = "#ff7f0e"


@dataclass(frozen=True)
class Axis:
    """What the y values of fig. 3 and 5 are: their name in titles, the axis label, the factor from
    the inputs to the axis and how a value (and chance) is written in the legend."""

    title: str = "Test error"
    label: str = "test error (%)"
    scale: float = 100.0
    value: str = "{:.2f}%"
    chance: str = "{:.0f}%"


ERROR = Axis()


def _pct(values: Sequence[float | None], scale: float = 100.0) -> list[float]:
    return [math.nan if v is None else scale * v for v in values]


def _chance_line(ax, chance: float | None, axis: Axis) -> None:
    if chance is not None:
        ax.axhline(axis.scale * chance, color="black", ls=":", lw=1,
                   label=f"chance ({axis.chance.format(axis.scale * chance)})")


def _reference_lines(ax, baseline: float | None, chance: float | None, color: str, label: str,
                     axis: Axis = ERROR) -> None:
    if baseline is not None:
        ax.axhline(axis.scale * baseline, color=color, ls="--", lw=1,
                   label=f"{label}: no deletion ({axis.value.format(axis.scale * baseline)})")
    _chance_line(ax, chance, axis)


def color_for(label: str) -> str:
    low = label.lower()
    for key, words in (("vgg", ("vgg", "plain")), ("stochastic", ("stochastic", "sd")),
                       ("fixed", ("fixed",))):
        if any(w in low for w in words):
            return PALETTE[key]
    return PALETTE["residual"]


# ---------------------------------------------------------------------------------------------
# fig. 3

def single_deletion(panels: Sequence[dict[str, Any]], subtitle: str, chance: float | None = None,
                    axis: Axis = ERROR) -> Figure:
    """One panel per model. Each panel: label, baseline (error of the whole net), errors (one per
    block; None where the block cannot be deleted), downsample (one bool per block); optional ci
    (per block [low, high], the 95% Wilson interval of the error, or None), drawn as error bars."""
    fig = new_figure(len(panels), f"{axis.title} after deleting one block (Veit et al. fig. 3)", subtitle)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, p in zip(axes, panels):
        color = p.get("color") or color_for(p["label"])
        err = _pct(p["errors"], axis.scale)
        idx = list(range(len(err)))
        ax.plot(idx, err, "o-", color=color, ms=4, lw=1.2, label=f"{p['label']}: one block deleted")
        ci = p.get("ci") or []
        bars = [(i, err[i], ci[i]) for i in idx if i < len(ci) and ci[i] is not None and not math.isnan(err[i])]
        if bars:
            ax.errorbar([i for i, _, _ in bars], [e for _, e, _ in bars],
                        yerr=[[e - axis.scale * c[0] for _, e, c in bars], [axis.scale * c[1] - e for _, e, c in bars]],
                        fmt="none", ecolor=color, elinewidth=1, capsize=2, alpha=0.7, label="95% Wilson interval")
        down = [i for i, d in enumerate(p["downsample"]) if d and not math.isnan(err[i])]
        if down:
            ax.plot(down, [err[i] for i in down], "^", color=DOWNSAMPLE_COLOR, ms=9, mfc="none", mew=1.8,
                    label="downsampling block")
        fixed = [i for i, e in enumerate(err) if math.isnan(e)]
        for j, i in enumerate(fixed):  # a band over the whole height: no value, so no point on the error axis
            ax.axvspan(i - 0.4, i + 0.4, color="gray", alpha=0.15, lw=0, hatch="//",
                       label="cannot be deleted (changes shape)" if j == 0 else None)
        _reference_lines(ax, p.get("baseline"), chance, color, p["label"], axis)
        ax.set_xlabel("index of the deleted block (0 = first)")
        ax.set_ylabel(axis.label)
        ax.set_title(p["label"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return fig


# ---------------------------------------------------------------------------------------------
# fig. 5

def random_deletion(series: Sequence[dict[str, Any]], subtitle: str, chance: float | None = None,
                    axis: Axis = ERROR) -> Figure:
    """Each series: label, k (list), mean, std (per k, fractions), baseline; optional n_samples."""
    fig = new_figure(1, f"{axis.title} vs number of deleted blocks (Veit et al. fig. 5a)", subtitle, width=6.4)
    ax = fig.subplots()
    for s in series:
        color = s.get("color") or color_for(s["label"])
        k = list(s["k"])
        mean, std = _pct(s["mean"], axis.scale), _pct(s["std"], axis.scale)
        n = s.get("n_samples")
        extra = f", {n} random sets per k" if n else ""
        ax.plot(k, mean, "o-", color=color, ms=4, label=f"{s['label']}: mean{extra}")
        ax.fill_between(k, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                        color=color, alpha=0.2, label=f"{s['label']}: ± 1 std")
        if s.get("baseline") is not None:
            ax.plot([0], [axis.scale * s["baseline"]], "s", color=color, ms=6, label=f"{s['label']}: no deletion")
    _chance_line(ax, chance, axis)
    ax.set_xlabel("number of deleted blocks k")
    ax.set_ylabel(axis.label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def reorder(series: Sequence[dict[str, Any]], subtitle: str, bins: int = 10, axis: Axis = ERROR) -> Figure:
    """Each series: label, tau (per shuffled order), error (per order), baseline. Points are the
    orders; the line is the mean error in equal-width bins of tau."""
    fig = new_figure(1, f"{axis.title} vs Kendall τ after reordering blocks (Veit et al. fig. 5b)", subtitle, width=6.4)
    ax = fig.subplots()
    for s in series:
        color = s.get("color") or color_for(s["label"])
        tau, err = list(s["tau"]), _pct(s["error"], axis.scale)
        ax.scatter(tau, err, s=10, color=color, alpha=0.35, lw=0, label=f"{s['label']}: one shuffled order")
        if tau:
            lo, hi = min(tau), max(tau)
            edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)] if hi > lo else [lo, lo]
            xs, ys = [], []
            for a, b in zip(edges, edges[1:]):
                inside = [e for t, e in zip(tau, err) if a <= t <= b]
                if inside:
                    xs.append((a + b) / 2)
                    ys.append(sum(inside) / len(inside))
            ax.plot(xs, ys, "-", color=color, lw=2, label=f"{s['label']}: mean per τ bin")
        if s.get("baseline") is not None:
            ax.plot([1.0], [axis.scale * s["baseline"]], "s", color=color, ms=7, label=f"{s['label']}: original order")
    ax.invert_xaxis()  # from the original order (τ = 1) to more shuffled ones, like fig. 5a's k
    ax.set_xlabel("Kendall τ between the shuffled and the original block order")
    ax.set_ylabel(axis.label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# fig. 6 and 7

def _shade_range(ax, lo: int, hi: int, label: str | None) -> None:
    ax.axvspan(lo - 0.5, hi + 0.5, color="#ffd54f", alpha=0.35, lw=0, label=label)


def paths(n: int, lengths: Sequence[int], share_of_paths: Sequence[float], grad_mean: Sequence[float],
          grad_low: Sequence[float], grad_high: Sequence[float], total: Sequence[float],
          effective: tuple[int, int], effective_share: float, effective_paths_share: float,
          subtitle: str, samples: int | None = None) -> Figure:
    """(a) share of the 2^n paths with each length; (b) mean gradient norm reaching the input from
    one sampled path of each length, with its CI, log scale; (c) total = C(n, k) x mean per length,
    with the effective range (the shortest range holding `effective_share` of the total) shaded."""
    fig = new_figure(3, f"Paths through {n} blocks (Veit et al. fig. 6)", subtitle, width=4.6)
    a, b, c = fig.subplots(1, 3)
    all_k = list(range(n + 1))
    a.bar(all_k, [100 * s for s in share_of_paths], color=PALETTE["residual"], width=0.8,
          label=f"C({n}, k) / 2^{n}")
    a.set_xlabel("path length k (blocks whose branch the path passes)")
    a.set_ylabel("share of all paths (%)")
    a.set_title("(a) distribution of path lengths", fontsize=10)
    a.legend(fontsize=8)

    ks = list(lengths)
    yerr = [[m - lo for m, lo in zip(grad_mean, grad_low)], [hi - m for m, hi in zip(grad_mean, grad_high)]]
    per = f" ({samples} sampled paths per k)" if samples else ""
    b.errorbar(ks, grad_mean, yerr=yerr, fmt="o-", ms=3, color=PALETTE["residual"], ecolor="gray",
               capsize=2, label="mean gradient norm" + per + ", 95% CI")
    b.set_yscale("log")
    b.set_xlabel("path length k")
    b.set_ylabel("‖∂loss/∂(input of block 0)‖ per path (log)")
    b.set_title("(b) gradient magnitude per path", fontsize=10)
    b.legend(fontsize=8)

    lo, hi = effective
    c.plot(ks, total, "o-", ms=3, color=PALETTE["residual"], label="C(n, k) × mean gradient norm")
    _shade_range(c, lo, hi, f"effective range k = {lo}–{hi}: {100 * effective_share:.0f}% of the total,"
                            f"\n{100 * effective_paths_share:.3g}% of all paths")
    c.set_xlabel("path length k")
    c.set_ylabel("total gradient norm of all length-k paths")
    c.set_title("(c) total gradient magnitude per length", fontsize=10)
    c.legend(fontsize=8, loc="upper right")
    for ax in (a, b, c):
        ax.grid(alpha=0.3)
        ax.set_xlim(-0.5, n + 0.5)
    return fig


def surviving_paths(n: int, deletions: Sequence[int], subtitle: str,
                    effective: tuple[int, int] | None = None,
                    measured: dict[str, Any] | None = None, axis: Axis = ERROR) -> Figure:
    """(a) C(n-d, x) / C(n, x): the share of length-x paths that deleting d blocks leaves intact;
    (b) with `measured` (label, k, mean error, effective_surviving per k): the share of the gradient
    of effective paths that survives vs the measured error after deleting k random blocks."""
    ncols = 2 if measured else 1
    fig = new_figure(ncols, "Paths left intact after deleting d blocks (Veit et al. fig. 7)", subtitle, width=5.6)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    a = axes[0]
    for d in deletions:
        xs = list(range(0, n - d + 1))
        a.plot(xs, [100 * math.comb(n - d, x) / math.comb(n, x) for x in xs], "-", lw=1.5,
               label=f"d = {d}: {100 * 2.0 ** -d:.3g}% of all paths left")
    if effective:
        _shade_range(a, effective[0], effective[1], f"effective range {effective[0]}–{effective[1]}")
    a.set_yscale("log")
    a.set_xlabel("path length x")
    a.set_ylabel("length-x paths left intact (%, log)")
    a.set_title("(a) C(n−d, x) / C(n, x)", fontsize=10)
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    if measured:
        b = axes[1]
        k = list(measured["k"])
        b.plot(k, [100 * s for s in measured["effective_surviving"]], "o-", color=PALETTE["fixed"], ms=4,
               label="share of the effective-path gradient left")
        b.set_xlabel("number of deleted blocks k")
        b.set_ylabel("gradient of effective paths left intact (%)", color=PALETTE["fixed"])
        b.set_ylim(0, 105)
        t = b.twinx()
        noun = "test error" if axis == ERROR else axis.title
        t.plot(k, _pct(measured["mean"], axis.scale), "s--", color=color_for(measured["label"]), ms=4,
               label=f"{measured['label']}: mean {noun}")
        t.set_ylabel(axis.label, color=color_for(measured["label"]))
        b.set_title("(b) effective paths lost vs error", fontsize=10)
        b.grid(alpha=0.3)
        h1, l1 = b.get_legend_handles_labels()
        h2, l2 = t.get_legend_handles_labels()
        b.legend(h1 + h2, l1 + l2, fontsize=8, loc="center right")
    return fig


# ---------------------------------------------------------------------------------------------
# fig. 8

def stochastic_depth(panels: Sequence[dict[str, Any]], subtitle: str,
                     random: Sequence[dict[str, Any]] | None = None) -> Figure:
    """(a) single deletion of each block for several residual nets of the same shape (panels as in
    single_deletion, on one axis); (b) optional random-k curves (series as in random_deletion)."""
    ncols = 2 if random else 1
    fig = new_figure(ncols, "Resilience with and without stochastic depth (Veit et al. fig. 8)", subtitle, width=5.8)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    a = axes[0]
    for p in panels:
        color = p.get("color") or color_for(p["label"])
        base = 100 * p["baseline"]
        inc = [e - base for e in _pct(p["errors"])]
        a.plot(range(len(inc)), inc, "o-", color=color, ms=4, lw=1.2,
               label=f"{p['label']} (no deletion: {base:.2f}%)")
        down = [i for i, d in enumerate(p["downsample"]) if d]
        a.plot(down, [inc[i] for i in down], "^", color=DOWNSAMPLE_COLOR, ms=9, mfc="none", mew=1.5)
    a.plot([], [], "^", color=DOWNSAMPLE_COLOR, ms=9, mfc="none", mew=1.5, label="downsampling block")
    a.axhline(0, color="black", lw=0.8)
    a.set_xlabel("index of the deleted block (0 = first)")
    a.set_ylabel("error increase over the whole net (pp)")
    a.set_title("(a) one block deleted", fontsize=10)
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    if random:
        b = axes[1]
        for s in random:
            color = s.get("color") or color_for(s["label"])
            k, mean, std = list(s["k"]), _pct(s["mean"]), _pct(s["std"])
            b.plot(k, mean, "o-", color=color, ms=4, label=f"{s['label']}: mean ± 1 std")
            b.fill_between(k, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                           color=color, alpha=0.15)
        b.set_xlabel("number of deleted blocks k")
        b.set_ylabel("test error (%)")
        b.set_title("(b) k random blocks deleted", fontsize=10)
        b.grid(alpha=0.3)
        b.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# Depth series

SERIES_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#17becf"]


def _depth_panel(ax, panel: dict[str, Any]) -> None:
    """One panel: per statistic, its value per net with the interval, the fitted trend over the measured
    depths (solid), its extrapolation (dashed) and the prediction with its interval at the target depth."""
    scale = panel.get("scale", 1.0)
    fitted, predicted = False, None
    notes = []  # (x, y, text, color) of each prediction, written beside it once the axes are final
    for j, s in enumerate(panel["lines"]):
        color = s.get("color") or SERIES_COLORS[j % len(SERIES_COLORS)]
        pts = [(n, v, lo, hi) for n, v, lo, hi in zip(s["n"], s["value"], s["low"], s["high"]) if v is not None]
        xs = [p[0] for p in pts]
        ys = [scale * p[1] for p in pts]
        err = [[scale * (p[1] - p[2]) if p[2] is not None else 0 for p in pts],
               [scale * (p[3] - p[1]) if p[3] is not None else 0 for p in pts]]
        ax.errorbar(xs, ys, yerr=err, fmt="o", color=color, ms=5, capsize=3, label=s["label"])
        if s.get("fit_x"):
            fitted = True
            ax.plot(s["fit_x"], [scale * y for y in s["fit_y"]], "-", color=color, lw=1.2, alpha=0.8)
            ax.plot(s["extra_x"], [scale * y for y in s["extra_y"]], "--", color=color, lw=1.2, alpha=0.8)
        pred = s.get("prediction")
        if pred and pred["value"] is not None:
            at, v = pred["at"], scale * pred["value"]
            lo = scale * pred["low"] if pred.get("low") is not None else None
            hi = scale * pred["high"] if pred.get("high") is not None else None
            yerr = [[v - lo], [hi - v]] if lo is not None and hi is not None else None
            ax.errorbar([at], [v], yerr=yerr, fmt="D", mfc="white", color=color, ms=6, capsize=4, ls="none")
            notes.append((at, v, panel["fmt"].format(v) + (
                f"\n[{panel['fmt'].format(lo)}, {panel['fmt'].format(hi)}]" if yerr else ""), color))
            predicted = at
    if predicted:
        ax.errorbar([], [], yerr=[[], []], fmt="D", mfc="white", color="gray", ms=6, capsize=4, ls="none",
                    label=f"extrapolated to {predicted} blocks, with its 95% prediction interval")
    if fitted:
        models = ", ".join(dict.fromkeys(s["model"] for s in panel["lines"] if s.get("fit_x")))
        ax.plot([], [], "-", color="gray", label=f"fitted trend, {models}")
        ax.plot([], [], "--", color="gray", label="the same, extrapolated (not measured)")
    for y, text in panel.get("hlines", []):
        ax.axhline(scale * y, color="black", ls=":", lw=1, label=text)
    if panel.get("half_n"):
        top = max(max(s["n"]) for s in panel["lines"] if s["n"])
        at = panel["lines"][0].get("prediction", {}).get("at", top)
        xs = [min(min(s["n"]) for s in panel["lines"]), max(top, at)]
        ax.plot(xs, [x / 2 for x in xs], ":", color="black", lw=1, label="n/2, the typical path length")
    if panel.get("log"):
        ax.set_yscale("log")
        # a wide prediction interval would stretch the axis over decades: keep it near the measured values
        measured = [scale * v for s in panel["lines"] for v in s["value"] + s["low"] if v is not None and v > 0]
        if measured and ax.get_ylim()[0] < min(measured) / 10:
            ax.set_ylim(bottom=min(measured) / 10)
    if panel.get("ylim"):
        lo, hi = panel["ylim"]
        cur_lo, cur_hi = ax.get_ylim()
        ax.set_ylim(max(cur_lo, scale * lo) if lo is not None else cur_lo,
                    min(cur_hi, scale * hi) if hi is not None else cur_hi)
    ax.set_xscale("log")
    if predicted:  # room for the prediction's numbers right of it
        ax.set_xlim(right=predicted * 1.45)
    ax.axvspan(max(max(s["n"]) for s in panel["lines"] if s["n"]), ax.get_xlim()[1], color="#eeeeee", lw=0, zorder=0)
    ns = sorted({n for s in panel["lines"] for n in s["n"]} | {s["prediction"]["at"] for s in panel["lines"]
                                                               if s.get("prediction")})
    ax.set_xticks(ns, [str(n) for n in ns])
    # the predictions' numbers, moved apart vertically where they would overlap (28 pixels a note of two lines)
    placed: list[float] = []
    for x, y, text, color in sorted(notes, key=lambda t: t[1]):
        at_y = ax.transData.transform((x, y))[1]
        shift = max(0.0, placed[-1] + 28 - at_y) if placed else 0.0
        placed.append(at_y + shift)
        ax.annotate(text, (x, y), xytext=(7, shift), textcoords="offset pixels", fontsize=6.5, color=color,
                    va="center")
    ax.xaxis.set_minor_locator(NullLocator())  # only the depths as ticks; the y axis keeps its own
    ax.set_xlabel("number of blocks n (log scale); shaded: beyond the measured depths")
    ax.set_ylabel(panel["ylabel"])
    ax.set_title(panel["title"], fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=panel.get("legend_columns", 2),
              frameon=False)


def depth_series(panels: Sequence[dict[str, Any]], title: str, subtitle: str) -> Figure:
    """One figure of a claim against depth. Each panel: title, ylabel, scale (inputs -> axis), fmt (a value
    on the axis), optional log, ylim, hlines [(y, label)], half_n; lines: per statistic label, interval
    (what its interval resamples), n, value, low, high (per net), model, fit_x/fit_y (the trend over the
    measured depths), extra_x/extra_y (its extrapolation) and prediction {at, value, low, high}."""
    one = len(panels) == 1
    fig = new_figure(len(panels), title, subtitle, width=7.0 if one else 5.8, height=5.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        _depth_panel(ax, dict(panel, legend_columns=1) if one else panel)
    return fig


def random_k_series(curves: Sequence[dict[str, Any]], panel: dict[str, Any], subtitle: str,
                    chance: float | None = None) -> Figure:
    """(a) the mean error against the share k/n of blocks deleted, one curve per net (label, x, mean, low,
    high per point, from k = 0); (b) the curves' summary against depth (a depth_series panel)."""
    fig = new_figure(2, "Random deletion against depth (Veit et al. fig. 5a, k/n)", subtitle, width=5.8, height=5.6)
    a, b = fig.subplots(1, 2)
    for j, c in enumerate(curves):
        color = SERIES_COLORS[j % len(SERIES_COLORS)]
        a.plot(c["x"], _pct(c["mean"]), "o-", color=color, ms=3, label=c["label"])
        a.fill_between(c["x"], _pct(c["low"]), _pct(c["high"]), color=color, alpha=0.15)
    a.fill_between([], [], [], color="gray", alpha=0.15, label="95% interval over the random sets")
    if chance is not None:
        a.axhline(100 * chance, color="black", ls=":", lw=1, label=f"chance ({100 * chance:.0f}%)")
    if panel.get("at_x") is not None:
        a.axvline(panel["at_x"], color="gray", ls="--", lw=1, label=f"k/n = {panel['at_x']:g} (right panel)")
    a.set_xlabel("share of the blocks deleted, k/n")
    a.set_ylabel("mean test error over the random sets (%)")
    a.set_title("(a) mean error against k/n", fontsize=10)
    a.grid(alpha=0.3)
    a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    _depth_panel(b, dict(panel, legend_columns=1))
    return fig
