"""Stochastic depth and fixed-m training beside a normally trained net (Veit et al. 2016, sec. 5).

The paper's claims, checkable on any dataset from three checkpoints of the same architecture:
  - a net trained with stochastic depth is slightly more resilient to deleting blocks (fig. 8);
  - a net trained with only m = 23 of 54 blocks active per mini-batch ("effective paths only")
    reaches the test error of the normally trained one.

`compare_nets({"normal": CKPT, "stochastic depth": CKPT, "fixed m=23": CKPT}, out=DIR)` runs, for
each net, the single-deletion and random-k lesion experiments (respaths.experiments.lesion, resumable files
DIR/<label>-lesion-single.* and DIR/<label>-lesion-random.*), evaluates each whole net once more
to compare it image by image with the reference net, and writes DIR/compare.json:

  nets[label]     checkpoint, training (stochastic_depth p_L, fixed_m), test {n, errors, error,
                  error_ci (Wilson 95%)}, single {errors per block, downsample, baseline,
                  mean_increase}, random {k, mean, std, n_samples}: the inputs of figures.stochastic_depth
  versus[label]   against the reference net (default: the first one trained normally):
                  error_delta = error(label) - error(reference) with its paired bootstrap 95% CI
                  and exact McNemar p; resilience = mean over blocks of the single-deletion error
                  increase of label minus the reference's, with a t interval over blocks
                  (negative: more resilient), and the difference of random-k mean errors per k.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np

from .. import stats
from ..adapters import view as make_view
from ..io.atomic import write_text
from ..io.checkpoint import load_checkpoint
from ..io.layout import compare_file, compared_lesion
from ..core import UserError, full_plan
from ..data.sources import load_dataset
from ..engine.trie import evaluate_plans
from ..engine.batching import iterate_batches
from .lesion import lesion_random, lesion_single
from ..metrics import ClassifierError


def training_of(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", {}) or {}
    return {"stochastic_depth": config.get("stochastic_depth"), "fixed_m": config.get("fixed_m")}


def load_test_split(meta: dict[str, Any], dataset: str | None, data_dir: str | None, limit: int | None):
    """The test images, normalised as the checkpoint was trained (when it is its own dataset)."""
    info = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {"name": meta.get("dataset")}
    name = dataset or info.get("name")
    if not name:
        raise UserError("a checkpoint does not say which dataset it was trained on; pass dataset=.")
    data = load_dataset(name, data_dir, split="test", limit=limit)
    if name == info.get("name"):
        data = replace(data, mean=tuple(info.get("mean", data.mean)), std=tuple(info.get("std", data.std)))
    return data


def _single_summary(view: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    base = records[0]["error"]
    errors: list[float | None] = [None] * len(view)
    for r in records:
        if r["kind"] == "single":
            errors[r["deleted"][0]] = r["error"]
    done = [e for e in errors if e is not None]
    return {"baseline": base, "errors": errors, "downsample": [b.downsample for b in view.blocks],
            "mean_increase": float(np.mean(done) - base) if done else None}


def random_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    by_k: dict[int, list[float]] = {}
    for r in records:
        if r["kind"] == "random":
            by_k.setdefault(r["k"], []).append(r["error"])
    ks = sorted(by_k)
    return {"baseline": records[0]["error"], "k": ks, "mean": [float(np.mean(by_k[k])) for k in ks],
            "std": [float(np.std(by_k[k])) for k in ks], "n_samples": min((len(v) for v in by_k.values()), default=0)}


def versus(ref: dict[str, Any], net: dict[str, Any], correct_ref: Any, correct_net: Any, seed: int = 0) -> dict[str, Any]:
    """net against the reference: test error (paired over images) and resilience (paired over blocks)."""
    c = stats.compare(correct_ref, correct_net, seed=seed)
    out: dict[str, Any] = {"error_delta": c["delta"], "error_delta_ci": c["delta_ci"], "mcnemar_p": c["mcnemar_p"],
                           "newly_wrong": c["newly_wrong"], "newly_right": c["newly_right"]}
    a, b = ref["single"], net["single"]
    if len(a["errors"]) == len(b["errors"]):
        diffs = [(eb - b["baseline"]) - (ea - a["baseline"]) for ea, eb in zip(a["errors"], b["errors"])
                 if ea is not None and eb is not None]
        out["resilience"] = {"mean_increase_delta": float(np.mean(diffs)) if diffs else None,
                             "ci": stats.mean_ci(diffs), "blocks": len(diffs)}
    ra, rb = ref["random"], net["random"]
    common = [k for k in ra["k"] if k in rb["k"]]
    out["random_delta"] = {"k": common, "mean_error_delta": [rb["mean"][rb["k"].index(k)] - ra["mean"][ra["k"].index(k)]
                                                             for k in common]}
    return out


def compare_nets(checkpoints: Mapping[str, str | Path], *, out: str | Path, reference: str | None = None,
                 dataset: str | None = None, data_dir: str | None = None, limit: int | None = None,
                 device: str = "cpu", **options: Any) -> dict[str, Any]:
    """compare_views on checkpoints (or run directories), each tested on the images and normalisation
    it was trained with (or on dataset=)."""
    import torch

    if len(checkpoints) < 2:
        raise UserError("compare_nets needs at least two checkpoints, e.g. a normally trained and a "
                        "stochastic-depth net.")
    nets = {}
    for label, ckpt in checkpoints.items():
        model, meta = load_checkpoint(ckpt, device)  # a checkpoint or the run directory holding one
        data = load_test_split(meta, dataset, data_dir, limit)
        x, _ = next(iter(iterate_batches(data.take(2), 2, torch.device(device))))
        with torch.inference_mode():
            view = make_view(model.eval(), x)
        nets[label] = SimpleNamespace(view=view, test=data, model=model, meta={"source": {"checkpoint": str(ckpt)}})
    return compare_views(nets, out=out, reference=reference, device=device, **options)


def compare_views(nets: Mapping[str, Any], *, out: str | Path, reference: str | None = None,
                  k: Any = "1-20", samples: int = 10, seed: int = 0, device: Any = "cpu",
                  progress: bool = False, force: bool = False, **lesion_options: Any) -> dict[str, Any]:
    """Single and random-k lesion curves and the test error of each net; see the module docstring.

    nets: label -> an object with .view, .test (its test images, preprocessed as it expects), .model
    and .meta (recorded in its result files). lesion_options go to respaths.experiments.lesion (batch_size,
    engine, chunk)."""
    out = Path(out)
    results: dict[str, dict[str, Any]] = {}
    correct: dict[str, Any] = {}
    names = {net.test.name for net in nets.values()}
    if len(names) > 1:
        raise UserError(f"the nets were trained on different datasets ({', '.join(sorted(names))}); "
                        f"compare nets of one dataset, or pass dataset= to test all on the same images.")
    out.mkdir(parents=True, exist_ok=True)
    for label, net in nets.items():
        view, data = net.view, net.test
        options = dict(lesion_options, device=device, progress=progress, force=force, meta=net.meta)
        single = lesion_single(view, data, out=str(compared_lesion(out, label, "single")), seed=seed,
                               desc=f"single deletion, {label}", **options)
        random = lesion_random(view, data, k=k, samples=samples, seed=seed,
                               out=str(compared_lesion(out, label, "random")), desc=f"random deletion, {label}",
                               **options)
        (whole,) = evaluate_plans(view, data, [full_plan(len(view))], device=device,
                                  batch_size=lesion_options.get("batch_size", 256))
        correct[label] = whole.examples["correct"]
        source = net.meta.get("source") or {}
        results[label] = {"checkpoint": source.get("checkpoint"), **({} if "checkpoint" in source else {"source": source}),
                          "model": view.name, "blocks": len(view), "training": training_of(net.model),
                          "test": ClassifierError.test_numbers(whole),
                          "single": _single_summary(view, single), "random": random_summary(random)}
    if reference is None:
        plain = [l for l, n in results.items() if not any(n["training"].values())]
        reference = plain[0] if plain else next(iter(results))
    if reference not in results:
        raise UserError(f"the reference {reference!r} is not one of the nets ({', '.join(results)}).")
    doc = {"schema": "respaths.experiments.compare/1", "dataset": names.pop(), "reference": reference, "nets": results,
           "versus": {l: versus(results[reference], results[l], correct[reference], correct[l], seed)
                      for l in results if l != reference}}
    write_text(compare_file(out), json.dumps(doc, indent=1) + "\n")
    return doc
