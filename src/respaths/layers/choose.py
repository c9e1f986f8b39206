"""Which blocks `respaths prune --from RESULT.json --remove N` removes: those a result file of
`respaths layers` or `respaths lesion --mode single` ranks as least harmful."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core import UserError
from ..metrics import ClassifierError, metric_named


def blocks_from_result(path: str | Path, remove: int, view: Any, fingerprint: str | None = None) -> tuple[list[int], dict]:
    """The first `remove` blocks a result file ranks as least harmful, and the reason (for the meta).

      layers greedy     the first N blocks greedy pruning removed, in its order;
      layers influence  the N blocks of lowest Block Influence (ShortGPT's order);
      layers angular    the N consecutive blocks at the best start (Gromov et al.);
      lesion single     the N blocks whose deletion alone raised the error (or the file's metric) least
                        (ties: lower loss, then lower index); removing them together may cost more
                        than each alone.
    The file must describe this model: its weights fingerprint, or where it has none, its blocks."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"there is no result file {path}; give the JSON that respaths layers or lesion wrote.") from None
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path} is not a JSON result file; give the JSON that respaths layers or lesion wrote.") from None
    meta = doc.get("meta") if isinstance(doc, dict) else None
    records = doc.get("records") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or not isinstance(records, list):
        raise UserError(f"{path} is not a respaths result file (no meta and records); give the JSON that "
                        f"respaths layers or lesion wrote.")
    check_same_model(path, meta, view, fingerprint)
    n = len(view)
    if not 1 <= remove < n:
        raise UserError(f"--remove {remove} is out of range: this model has {n} blocks; remove 1 to {n - 1}.")
    by_key = {r.get("key"): r for r in records if isinstance(r, dict)}
    reason: dict[str, Any] = {"from": str(path.resolve()), "remove": remove}
    if meta.get("command") == "layers":
        method = meta.get("method")
        if method == "greedy":
            step = by_key.get(f"greedy k={remove}")
            if step is None:
                raise UserError(f"{path} holds greedy steps up to k={max((r['k'] for r in records if r.get('kind') == 'greedy'), default=0)}, "
                                f"not {remove}; give a smaller --remove or rerun layers with more --steps.")
            blocks, rule = list(step["removed_order"]), "the first N blocks greedy pruning removed"
        elif method == "influence":
            bi = sorted((r["influence"], r["block"]) for r in records if r.get("kind") == "influence")
            blocks, rule = [b for _, b in bi[:remove]], "the N blocks of lowest Block Influence (ShortGPT)"
        elif method == "angular":
            step = by_key.get(f"angular-prune n={remove}")
            if step is None:
                raise UserError(f"{path} has no angular choice for n={remove}; give a smaller --remove.")
            blocks, rule = list(step["deleted"]), "the N consecutive blocks of least angular distance (Gromov et al.)"
        else:
            raise UserError(f"{path} is a layers {method} result, which ranks no blocks to remove; use a greedy, "
                            f"influence or angular result, or a lesion single result.")
        reason.update(method=f"layers {method}", rule=rule)
    elif meta.get("experiment") == "lesion-single":
        metric = metric_named(meta.get("metric", "classifier"))
        single = [r for r in records if r.get("kind") == "single"]
        ranked = sorted(single, key=lambda r: (metric.worse(r), r.get("loss", 0.0), r["deleted"][0]))
        if len(ranked) < remove:
            raise UserError(f"{path} has {len(ranked)} single deletions, fewer than --remove {remove}.")
        blocks = [r["deleted"][0] for r in ranked[:remove]]
        named = "error" if isinstance(metric, ClassifierError) else metric.label
        reason.update({"method": "lesion single", "rule": f"the N blocks whose deletion alone raised the {named} least",
                       "errors" if isinstance(metric, ClassifierError) else metric.field:
                           {str(r["deleted"][0]): r[metric.field] for r in ranked[:remove]}})
    else:
        raise UserError(f"{path} is neither a layers greedy/influence/angular result nor a lesion single result; "
                        f"run one of those first.")
    reason["blocks"] = blocks
    return blocks, reason


def check_same_model(path: Path, meta: dict, view: Any, fingerprint: str | None) -> None:
    recorded = meta.get("fingerprint")
    if recorded is not None and fingerprint is not None:
        if recorded != fingerprint:
            raise UserError(f"{path} was measured on another model (its weights differ from the model given); "
                            f"give the result file of this model.")
        return
    names = meta.get("block_names") or [b.get("name") for b in meta.get("blocks") or [] if isinstance(b, dict)]
    if names and names != [b.name for b in view.blocks]:
        raise UserError(f"{path} was measured on a model with {len(names)} blocks of other names; give the result "
                        f"file of this model.")
