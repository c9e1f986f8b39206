"""`respaths prune`: open a model, choose the blocks (given, or from a result file: layers.choose),
prune it (respaths.prune), measure the metric before and after where data is given, and write the
pruned model into a new directory, whole or not at all (respaths.io.pruned; respaths.load_pruned
reads a pruned CNN back).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core import UserError, delete_blocks
from ..engine.batching import iterate_batches
from ..metrics import metric_for, metric_named
from ..models import Net
from ..io.pruned import save_weights, write_pruned
from ..opening import OpenOptions, open_model
from ..prune import metric_of, prune, resolve
from .choose import blocks_from_result


def export(model_name: str, out: str | Path, *, blocks: list[str] | None = None, result: str | None = None,
           remove: int | None = None, options: OpenOptions = OpenOptions()) -> str:
    """`respaths prune`: open the model, choose the blocks (given, or from a result file), prune, measure
    the metric before and after where data is given, and write the model into the new directory out,
    whole or not at all. Returns a one-paragraph summary."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty directory; give a new directory to --out.")
    has_data = bool(options.dataset or options.text)
    device = options.device
    opened = open_model(model_name, options, need_data=False)
    model, v = opened.model, opened.view
    example = None
    if opened.data is not None and not isinstance(opened.data, list):
        example, _ = next(iter(iterate_batches(opened.data.take(2), 2, torch.device(device))))
    if result is not None:
        gone_spec, reason = blocks_from_result(result, remove, v, opened.description.get("fingerprint"))
    else:
        gone_spec, reason = blocks, {"method": "--blocks", "blocks": blocks}
    with torch.no_grad():
        pruned = prune(model, gone_spec, example).eval()  # a bad block is a UserError before anything is written
    gone = resolve(v, model, gone_spec)
    info: dict[str, Any] = {"removed": gone, "removed_names": [v.blocks[i].name for i in gone],
                            "blocks_before": len(v), "blocks_after": len(v) - len(gone), "reason": reason,
                            "source": opened.description["source"], "fingerprint_before": opened.description["fingerprint"]}
    lines = [f"removed blocks {gone} of {len(v)} ({reason.get('rule') or 'as given'})"]
    if opened.data is not None:
        text_metric = None
        if isinstance(opened.data, list):
            text_metric = metric_for(v, opened.data)  # its cosine reference is the full model's, set first
        plan = delete_blocks(len(v), gone, label="pruned")
        before = metric_of(opened, model, text_metric=text_metric)
        after = metric_of(opened, pruned, text_metric=text_metric)
        planned = metric_of(opened, model, plan, text_metric)
        info["metric"] = {"name": opened.metric, "before": before, "after": after, "plan": planned,
                          "data": {k: opened.description.get(k) for k in ("preprocessing", "text", "seq_len")
                                   if opened.description.get(k) is not None},
                          "dataset": getattr(opened.data, "name", None)}
        scored = metric_named(opened.metric)
        where = f"{before['n']} {scored.counts}"
        lines.append(f"before: {scored.describe(before)}; after: {scored.describe(after)} "
                     f"(the view's deletion plan: {scored.describe(planned)}) on {where}")
    elif not has_data:
        lines.append("no data given (--dataset or --text), so no metric before and after")
    if v.adapter != "hf":
        info["input_shape"] = list(example.shape[1:]) if example is not None else None
        if isinstance(model, Net):
            info["base"] = {"respaths_model": {"name": model.config.get("name"), "config": dict(model.config)}}
        elif "model" in opened.description["source"]:  # given by spec
            info["base"] = {"spec": model_name, "num_classes": options.num_classes,
                            "model_kwargs": options.model_kwargs or {}}
        else:
            raise UserError(f"respaths cannot record how to rebuild {type(model).__name__}; give it as a spec.")
        info["trained_on"] = opened.description.get("trained_on")  # a checkpoint's dataset and normalisation
    if v.adapter == "hf":
        def write_model(tmp: Path) -> None:
            pruned.save_pretrained(tmp)
            if opened.tokenizer is not None:
                opened.tokenizer.save_pretrained(tmp)
    else:
        write_model = save_weights(pruned)
    write_pruned(out, info, write_model)
    lines.append(f"wrote {out}" + ("" if v.adapter == "hf" else f" (reload it with respaths.load_pruned({str(out)!r}))"))
    return "\n".join(lines)
