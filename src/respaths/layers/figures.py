"""Figures of a `respaths layers` result file (respaths.layers.importance), drawn from its numbers only.

  plot(doc) -> Figure    by the file's method:
    influence  Block Influence per block | metric after deleting the k least influential blocks
    greedy     metric vs k deleted: greedy, Block-Influence order, random order (mean and range)
    angular    angular distance d(l, l+n) as a heat map | metric after deleting the best n blocks
    painters   metric vs k middle blocks for each variant (random: mean over seeds)
  save(fig, prefix) (respaths.drawing) writes prefix.png and prefix.svg atomically.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from matplotlib.ticker import MaxNLocator

from ..metrics import metric_named
from ..drawing import new_figure

COLORS = {"greedy": "#d62728", "influence-order": "#1f77b4", "random-order": "#7f7f7f",
          "angular-prune": "#2ca02c", "skip": "#1f77b4", "repeat": "#d62728", "reverse": "#ff7f0e",
          "random": "#7f7f7f", "parallel": "#2ca02c", "looped": "#9467bd"}


def curve(records: list[dict], kind: str, field: str, by: str = "k") -> tuple[list[int], list[float], list[float], list[float]]:
    """(k, mean, min, max) of field over the records of one kind, grouped by k."""
    groups: dict[int, list[float]] = defaultdict(list)
    for r in records:
        if r.get("kind") == kind and field in r:
            groups[r[by]].append(r[field])
    ks = sorted(groups)
    return (ks, [sum(groups[k]) / len(groups[k]) for k in ks], [min(groups[k]) for k in ks],
            [max(groups[k]) for k in ks])


def plot(doc: dict[str, Any]) -> Any:
    meta, records = doc["meta"], doc["records"]
    metric = metric_named(meta.get("metric", "lm"))
    field, ylabel = metric.field, metric.plot_label
    base = doc.get("baseline", {}).get(field)
    method = meta["method"]
    name = "/".join(meta.get("model", "").rstrip("/").split("/")[-2:])  # e.g. package/model
    subtitle = f"{name} ({meta.get('model_class', '')}, {meta['blocks']} blocks, split={meta.get('split')})"
    two = method in ("influence", "angular")
    fig = new_figure(2 if two else 1, f"respaths layers --method {method}", subtitle, width=5.6 if two else 6.4)
    axes = fig.subplots(1, 2) if two else [fig.subplots()]
    ax = axes[-1]
    if method == "influence":
        bi = sorted((r["block"], r["influence"]) for r in records if r["kind"] == "influence")
        axes[0].bar([b for b, _ in bi], [v for _, v in bi], color=COLORS["influence-order"])
        axes[0].set_xlabel("block")
        axes[0].set_ylabel("Block Influence 1 - cos(in, out)")
    if method == "angular":
        L = meta["blocks"]
        grid = [[math.nan] * L for _ in range(L)]  # rows: n (1..L), columns: l
        for r in records:
            if r["kind"] == "angular":
                grid[r["n"] - 1][r["l"]] = r["distance"]
        im = axes[0].imshow(grid, origin="lower", aspect="auto", cmap="viridis",
                            extent=(-0.5, L - 0.5, 0.5, L + 0.5))
        fig.colorbar(im, ax=axes[0], label="angular distance d(l, l+n)")
        axes[0].set_xlabel("first block removed l")
        axes[0].set_ylabel("blocks removed n")
    if method == "painters":
        kinds = [k for k in COLORS if any(r["kind"] == f"painters-{k}" for r in records)]
        series = [(f"painters-{k}", k) for k in kinds]
        ax.set_xlabel("middle blocks changed k")
    else:
        series = [(k, k) for k in ("random-order", "influence-order", "angular-prune", "greedy")
                  if any(r["kind"] == k for r in records)]
        ax.set_xlabel("blocks deleted k")
    for kind, label in series:
        ks, mean, lo, hi = curve(records, kind, field)
        style = "s--" if label == "greedy" else "o-"  # drawn last and dashed: it often lies on another
        ax.plot(ks, mean, style, ms=4, color=COLORS[label], label=label + (" (mean, range)" if kind.endswith("random")
                                                                           or label == "random-order" else ""))
        if any(a != b for a, b in zip(lo, hi)):
            ax.fill_between(ks, lo, hi, color=COLORS[label], alpha=0.2)
    if base is not None:
        ax.axhline(base, color="black", ls="--", lw=1, label=f"full model ({base:.3g})")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
