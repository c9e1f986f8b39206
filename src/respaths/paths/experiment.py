"""The path-gradient experiment, resumable: one record per length in a ResultStore (`respaths paths`),
for classifiers and, with --text, Hugging Face decoders."""
from __future__ import annotations

import sys
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from .. import distributed
from ..core import ResidualView, UserError
from ..engine.options import EngineOptions
from ..data.batches import batches as data_batches
from ..experiments.lesion import parse_k
from ..metrics import inputs_of, metric_named, to_device
from ..io.layout import ResultFolder
from ..io.results import ResultStore
from .counting import effective_range, total_gradient
from .gradients import length_key, measure_path_gradients

# ---------------------------------------------------------------------------------------------
# The experiment, resumable: one record per length in a ResultStore


def effective_summary(n: int, records: Sequence[dict[str, Any]], share: float = 0.9) -> dict[str, Any]:
    """The effective range of lengths computed from path-gradient records (one per length)."""
    totals = total_gradient(n, {r["length"]: r["mean"] for r in records})
    return {**effective_range(n, totals, share), "measured_lengths": sorted(totals)}


def run_path_gradients(view: ResidualView, batches: Sequence[tuple[Any, Tensor]], out: str, meta: dict[str, Any],
                       lengths: Iterable[int], *, samples: int = 1000, seed: int = 0, share: float = 0.9,
                       chunk: int | None = None, confidence: float = 0.95, force: bool = False,
                       progress: bool = False, engine: EngineOptions = EngineOptions()) -> dict[str, Any]:
    """measure_path_gradients into out.json / out.csv, skipping the lengths a previous run finished
    (engine: its fast rewrite, see fast_network).

    The finished file holds one record per length measured so far and, at the top level, `blocks`
    and `effective` (effective_summary of those records). Returns that document's fields."""
    if samples < 1:
        raise UserError(f"--samples must be at least 1, not {samples}.")
    n = len(view)
    lengths = list(lengths)
    bad = [k for k in lengths if not 0 <= k <= n]
    if bad or not lengths:
        raise UserError(f"path length {bad[0]} is out of range: this model has {n} blocks, so lengths are 0..{n}."
                        if bad else "no path lengths to measure; give some with --lengths, e.g. 1-10.")
    meta = {"experiment": "path-gradients", "blocks": n, "samples": samples, "seed": seed,
            "confidence": confidence, **meta}
    if engine.fast:  # recorded only when on, so that exact result files of earlier versions still resume
        meta["fast"] = True

    # under torchrun (see respaths.distributed) rank 0 alone opens and writes the file
    distributed.init()
    store = distributed.on_main(lambda: ResultStore(out, meta, force=force, required=("length", "mean", "paths")))
    done = distributed.broadcast([k for k in lengths if store.done(length_key(k))] if store is not None else None)
    if done and distributed.is_main():
        print(f"[respaths] path gradients: {len(set(done))}/{len(set(lengths))} lengths already done in {out}, kept",
              file=sys.stderr, flush=True)
    for rec in measure_path_gradients(view, batches, lengths, samples=samples, seed=seed, chunk=chunk,
                                      confidence=confidence, skip=done, progress=progress, engine=engine):
        if store is not None:
            store.append(rec)

    def finish() -> dict[str, Any]:
        records = sorted(store.records, key=lambda r: r["length"])
        effective = effective_summary(n, records, share)
        store.finish(order=[r["key"] for r in records], blocks=n, effective=effective)
        return {"meta": store.meta, "blocks": n, "effective": effective, "records": records}

    return distributed.broadcast(distributed.on_main(finish))


def paths_main(opened: Any, *, out: str = "runs", samples: int = 1000, lengths: str = "all",
               batch_size: int = 128, batches: int = 10, seed: int = 0, share: float = 0.9,
               chunk: int | None = None, force: bool = False, progress: bool = True,
               engine: EngineOptions = EngineOptions()) -> dict[str, Any]:
    """`respaths paths`: path gradients of an opened model (respaths.opening.open_model, split="train")
    on its training set, into OUT/paths.json and .csv.

    The batches are the first `batches` of a seeded shuffle of the training images (no augmentation),
    preprocessed as the model expects."""
    v, data = opened.view, opened.data
    dev = next(v.model.parameters()).device if v.model is not None else torch.device("cpu")
    if isinstance(data, list):
        return text_paths(opened, out=out, samples=samples, lengths=lengths, batches=batches, seed=seed,
                          share=share, chunk=chunk, force=force, progress=progress, device=dev)
    gen = torch.Generator().manual_seed(seed)
    chosen = [b for _, b in zip(range(batches), data_batches(data, batch_size, dev, train=True, generator=gen))]
    n = len(v)
    ks = list(range(n + 1)) if lengths == "all" else parse_k(lengths)
    source = opened.description["source"]
    run_meta = {"source": source, "model": v.name, "dataset": data.name, "split": "train",
                "batch_size": batch_size, "batches": len(chosen), "n_images": sum(len(y) for _, y in chosen),
                "bn": "eval (running statistics)", "dtype": str(chosen[0][0].dtype).replace("torch.", "")}
    if "checkpoint" not in source:  # a brought model: how it was preprocessed, and which weights
        run_meta.update(preprocessing=opened.description["preprocessing"], fingerprint=opened.description["fingerprint"])
    return run_path_gradients(v, chosen, str(ResultFolder(out).paths), run_meta, ks, samples=samples, seed=seed,
                              share=share, chunk=chunk, force=force, progress=progress, engine=engine)


def text_batches_for_paths(opened: Any, batches: int, device: torch.device) -> list[tuple[Any, Any]]:
    """(inputs, targets) of the first `batches` text batches of a Hugging Face model: for a decoder the
    targets are the batch itself (path_loss takes its next-token loss), for a classifier its labels.
    An encoder scored by embedding cosine has no loss to differentiate: the cosine to the full model
    is at its optimum, with gradient 0, on the full model's own output, so it is refused."""
    metric = metric_named(opened.metric)
    if not metric.path_loss:
        raise UserError(metric.no_path_loss())
    out = []
    for b in opened.data[:batches]:
        b = to_device(b, device)
        out.append((inputs_of(b), metric.targets(b)))
    return out


def text_paths(opened: Any, *, out: str, samples: int, lengths: str, batches: int, seed: int, share: float,
               chunk: int | None, force: bool, progress: bool, device: torch.device) -> dict[str, Any]:
    """paths_main for a Hugging Face model and --text: the gradients of the LM loss (decoders) or of the
    classifier's cross-entropy at the first block's input, on the first `batches` text batches."""
    v = opened.view
    chosen = text_batches_for_paths(opened, batches, device)
    n = len(v)
    ks = list(range(n + 1)) if lengths == "all" else parse_k(lengths)
    d = opened.description
    run_meta = {"source": d["source"], "model": v.name, "dataset": "text", "text": d["text"],
                "seq_len": d["seq_len"], "metric": opened.metric,
                "loss": metric_named(opened.metric).path_loss,
                "batches": len(chosen), "n_examples": sum(len(x["input_ids"]) for x, _ in chosen),
                "fingerprint": d["fingerprint"]}
    return run_path_gradients(v, chosen, str(ResultFolder(out).paths), run_meta, ks, samples=samples, seed=seed,
                              share=share, chunk=chunk, force=force, progress=progress)
