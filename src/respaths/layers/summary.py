"""What `respaths layers` prints when it is done: the result in a few lines, read from its result file.

  summary_lines(doc) -> list[str]   by the file's method:
    influence  Block Influence's ranking, and the metric after deleting the k least influential blocks
    greedy     the order of removal with the metric after each step, beside the Block-Influence order
               and the random orders at the same k, and Block Influence's ranking
    angular    for each n the best first block l, its angular distance and the metric after deleting
    painters   the metric of each variant for each number of middle blocks (random: mean over seeds)
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from ..metrics import Metric, metric_named


def _value(r: dict[str, Any], metric: Metric) -> str:
    return metric.format(r[metric.field]) if isinstance(r.get(metric.field), (int, float)) else "—"


def _block(i: int, names: list[str]) -> str:
    return f"{i} ({names[i]})" if 0 <= i < len(names) else str(i)


def influence_ranking(records: list[dict[str, Any]], names: list[str]) -> str:
    bi = sorted(((r["influence"], r["block"]) for r in records if r.get("kind") == "influence"))
    return ("Block Influence, least to most influential: "
            + ", ".join(f"{_block(i, names)} {v:.4g}" for v, i in bi))


def summary_lines(doc: dict[str, Any]) -> list[str]:
    meta, records = doc["meta"], doc["records"]
    metric = metric_named(meta.get("metric", "lm"))
    field = metric.field
    names = list(meta.get("block_names") or [])
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_kind[r.get("kind", "")].append(r)
    base = doc.get("baseline", {})
    lines = [f"full model: {field} " + (metric.show(base) if field in base else "—")]
    method = meta.get("method")
    if method == "greedy":
        greedy = sorted(by_kind["greedy"], key=lambda r: r["k"])
        order = {r["k"]: r for r in by_kind["influence-order"]}
        rand: dict[int, list[float]] = defaultdict(list)
        for r in by_kind["random-order"]:
            rand[r["k"]].append(r[field])
        lines.append(f"greedy pruning, the order of removal and the {field} after each step "
                     f"(beside deleting the k least influential blocks, and {len(by_kind['random-order']) // max(len(rand), 1)} "
                     f"random orders' mean):")
        lines.append(f"  {'k':>3}  {'greedy removes':<24} {field:>10}  {'influence order':>15}  {'random':>10}")
        for r in greedy:
            k = r["k"]
            removed = r.get("removed_order") or r.get("deleted") or []
            step = _block(removed[-1], names) if removed else "—"
            mean = metric.format(statistics.mean(rand[k])) if rand.get(k) else "—"
            lines.append(f"  {k:>3}  {step:<24} {_value(r, metric):>10}  {_value(order.get(k, {}), metric):>15}  {mean:>10}")
        if greedy:
            lines.append("order of removal: " + ", ".join(map(str, greedy[-1].get("removed_order", []))))
        lines.append(influence_ranking(records, names))
    elif method == "influence":
        lines.append(influence_ranking(records, names))
        lines.append(f"the {field} after deleting the k least influential blocks: " + ", ".join(
            f"k={r['k']} {_value(r, metric)}" for r in sorted(by_kind["influence-order"], key=lambda r: r["k"])))
    elif method == "angular":
        lines.append(f"for each n, the n consecutive blocks from l with the smallest angular distance d(l, l+n), "
                     f"and the {field} after deleting them:")
        for r in sorted(by_kind["angular-prune"], key=lambda r: r["k"]):
            lines.append(f"  n={r['k']:<3} l={r['l']:<3} d={r['distance']:.4f}  {field} {_value(r, metric)}")
    elif method == "painters":
        values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in records:
            if str(r.get("kind", "")).startswith("painters-"):
                values[r["variant"]][r["k"]].append(r[field])
        ks = sorted({k for v in values.values() for k in v})
        lines.append(f"the {field} with the k middle blocks changed (random: mean over its seeds):")
        lines.append("  " + f"{'variant':<10}" + "".join(f"{f'k={k}':>10}" for k in ks))
        for variant, per_k in values.items():
            lines.append("  " + f"{variant:<10}" + "".join(
                f"{metric.format(statistics.mean(per_k[k])):>10}" if per_k.get(k) else f"{'—':>10}" for k in ks))
    return lines
