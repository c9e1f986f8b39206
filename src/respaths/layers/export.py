"""`respaths prune`: open a model, choose the blocks (given, or from a result file: layers.choose),
prune it (respaths.prune), measure the metric before and after where data is given, and write the
pruned model into a new directory, whole or not at all (respaths.io.pruned; respaths.load_pruned
reads a pruned CNN back).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..core import UserError, delete_blocks
from ..engine.batching import iterate_batches
from ..metrics import metric_for, metric_named
from ..models import Net
from ..io.pruned import PRUNE_META
from ..opening import OpenOptions, open_model
from ..prune import metric_of, prune, resolve, save_pruned
from .choose import blocks_from_result


def export(model_name: str, out: str | Path, *, blocks: list[str] | None = None, result: str | None = None,
           remove: int | None = None, options: OpenOptions = OpenOptions(), progress: bool = False) -> str:
    """`respaths prune`: open the model, choose the blocks (given, or from a result file), prune, measure
    the metric before and after where data is given (progress: a bar over those evaluations), and write
    the model into the new directory out, whole or not at all. Returns a one-paragraph summary."""
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
    info: dict[str, Any] = {"reason": reason, "source": opened.description["source"],
                            "fingerprint_before": opened.description["fingerprint"]}
    lines = [f"removed blocks {gone} of {len(v)} ({reason.get('rule') or 'as given'})"]
    if opened.data is not None:
        text_metric = None
        if isinstance(opened.data, list):
            text_metric = metric_for(v, opened.data)  # its cosine reference is the full model's, set first
        plan = delete_blocks(len(v), gone, label="pruned")
        evaluations = {"before": (model, None), "after": (pruned, None), "the view's plan": (model, plan)}
        scores = {}
        with tqdm(evaluations.items(), desc=f"{opened.metric}: before and after pruning", unit="evaluation",
                  disable=not progress, leave=False) as bar:
            for name, (net, net_plan) in bar:
                bar.set_postfix_str(name)
                scores[name] = metric_of(opened, net, net_plan, text_metric)
        before, after, planned = scores.values()
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
    source = opened.description["source"]
    if v.adapter != "hf":
        info["trained_on"] = opened.description.get("trained_on")  # a checkpoint's dataset and normalisation
    given_by_spec = "model" in source
    save_pruned(pruned, out, tokenizer=opened.tokenizer, copy_from=source.get("hf"), example_input=example,
                base={"spec": model_name, "num_classes": options.num_classes, "model_kwargs": options.model_kwargs or {}}
                if given_by_spec and not isinstance(model, Net) else None,
                model_kwargs=options.model_kwargs if given_by_spec else None, info=info)
    rebuild = json.loads((out / PRUNE_META).read_text()).get("rebuild")
    if rebuild is not None:
        lines.append(f"the library builds it as {rebuild['python']}, then load_state_dict(model.safetensors)")
    lines.append(f"wrote {out}" + ("" if v.adapter == "hf" else f" (reload it with respaths.load_pruned({str(out)!r}))"))
    return "\n".join(lines)
