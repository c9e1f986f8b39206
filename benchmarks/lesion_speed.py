"""Single-deletion sweep of a ResNet-110-shaped model: the lesion engine against the naive way.

    python benchmarks/lesion_speed.py                       # resnet110, 2000 images, width 1, 3x32x32
    python benchmarks/lesion_speed.py --images 500 --slices 2    # the same, ~6 minutes on 2 cores
    python benchmarks/lesion_speed.py --model preresnet110 --naive-plans all --variants all

The naive way runs each plan as its own model (a deep copy with the deleted blocks really replaced
by post(shortcut(x)), respaths.experiments.lesion.lesioned_model), one plain fp32 forward over the images per
plan. The engine (respaths.engine.evaluate_plans) runs the same 55 plans (baseline + each of the 54
blocks deleted alone) in one pass. Both run in this process, interleaved slice by slice of the
images so that a shared CPU's changing load hits them alike; the ratio of their summed wall times
is printed, and every plan's error from the engine is compared with the naive one.

The naive way costs one full forward per plan whichever block it deletes, so by default it runs
on --naive-plans evenly spaced plans and its total is that time scaled to all 55 plans (give
--naive-plans all to run all of them: ~25 minutes on 2 cores at 2,000 images).

Weights are random (He init) with BatchNorm statistics calibrated on the images, so activations
are normalised as in a trained net; the labels are the intact model's own predictions. The baseline
error is then 0 and a plan's error is the fraction of images whose prediction it changes, which is
as sensitive to numerical differences as an error can be.

Engine variants:
  exact    fp32, the trie alone: prefixes shared, 1539 block steps per batch instead of 2970
  fast     + eval BatchNorm folded into the preceding convolution, channels_last
  compile  channels_last + torch.compile of each block with inductor freezing (one graph per block);
           the compile time counts in the engine's time (first slice)
  bf16     fast under bfloat16 autocast

Measured on the 2-core AMD EPYC this was written on (AVX2; no AVX512, AVX512-BF16 or AMX), 1 thread:
  --images 500 --batch-size 125 (quiet machine):  naive 335 s (4 of 55 plans, scaled);
      exact 154 s = 2.17x, fast 131 s = 2.55x; errors equal to the naive ones on every compared plan
  --images 2000 --batch-size 250 (machine load falling from 5 to 0.3 during the run):
      naive 1895 s (4 plans, scaled), fast 625 s = 3.03x; errors equal to the naive ones
  per full forward (baseline plan, 500 images, batch 125, quiet): exact 16.2 ms/image, fast 11.5
      (folding + channels_last: 1.4x), compile 14.4 after a 45 s compile (no gain here), bf16
      autocast 99 ms (8.6x slower: without AVX512-BF16 the CPU emulates bf16 convolutions).
So on this CPU the goals (4x at fp32, 8x with bf16) are not met: sharing prefixes gives ~2x, the
per-block tricks another ~1.2-1.4x, and bf16 is a loss, not a gain.
"""
from __future__ import annotations

import argparse
import time

import torch

import respaths
from respaths.core import full_plan
from respaths.engine import EngineOptions, evaluate_plans, trie_cost
from respaths.experiments.lesion import lesioned_model, single_plans

VARIANTS = {  # name: evaluate_plans' engine options
    "exact": EngineOptions(dtype="float32"),
    "fast": EngineOptions(dtype="float32", fast=True),
    "compile": EngineOptions(dtype="float32", fast=True, compile=True),
    "bf16": EngineOptions(dtype="bfloat16", fast=True),
}


def calibrated_model(name: str, images: torch.Tensor, batch_size: int) -> torch.nn.Module:
    """Random weights, BatchNorm running statistics measured on the images (train-mode passes)."""
    torch.manual_seed(0)
    model = respaths.build_model(name, in_channels=3, num_classes=10, width=1.0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for s in range(0, min(len(images), 4 * batch_size), batch_size):
            model(images[s:s + batch_size])
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet110", help="resnet110 or preresnet110 (any respaths CIFAR name)")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--slices", type=int, default=4, help="image slices over which the two ways alternate")
    p.add_argument("--batch-size", type=int, default=125, help="engine batch size")
    p.add_argument("--naive-batch-size", type=int, default=125)
    p.add_argument("--naive-plans", default="4", help="number of plans run the naive way, or 'all'")
    p.add_argument("--variants", default="exact,fast", help=f"from {','.join(VARIANTS)}, or 'all'")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both ways (1 by default: on a shared 2-core machine, 2 threads "
                        "oversubscribe the cores and make timings swing 5x; 0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, 32, 32, generator=g)
    model = calibrated_model(args.model, x, args.naive_batch_size)
    with torch.inference_mode():
        labels = torch.cat([model(x[s:s + 500]).argmax(1) for s in range(0, len(x), 500)])
    view = respaths.view(model, x[:2])
    plans = [full_plan(len(view))] + [sp.plan for sp in single_plans(view)]
    trie, separate = trie_cost(plans)
    print(f"{args.model}: {len(view)} blocks, {len(plans)} plans, {args.images} images in {args.slices} slices, "
          f"{torch.get_num_threads()} threads; the trie runs {trie} block steps per batch instead of "
          f"{separate} ({separate / trie:.2f}x fewer)", flush=True)

    n_naive = len(plans) if args.naive_plans == "all" else min(int(args.naive_plans), len(plans))
    picked = sorted({round(i * (len(plans) - 1) / max(n_naive - 1, 1)) for i in range(n_naive)})
    twins = [lesioned_model(model, plans[i], x[:2]).eval() for i in picked]
    naive_wrong = [0] * len(picked)
    naive_sec = 0.0
    wrong = {v: [0] * len(plans) for v in variants}
    sec = {v: 0.0 for v in variants}
    step = -(-args.images // args.slices)
    for s in range(0, args.images, step):
        xs, ys = x[s:s + step], labels[s:s + step]
        t = time.perf_counter()
        with torch.inference_mode():
            for j, twin in enumerate(twins):
                for b in range(0, len(xs), args.naive_batch_size):
                    out = twin(xs[b:b + args.naive_batch_size])
                    naive_wrong[j] += int((out.argmax(1) != ys[b:b + args.naive_batch_size]).sum())
        naive_sec += time.perf_counter() - t
        for v in variants:
            t = time.perf_counter()
            results = evaluate_plans(view, (xs, ys), plans, batch_size=args.batch_size, engine=VARIANTS[v])
            sec[v] += time.perf_counter() - t
            for i, r in enumerate(results):
                wrong[v][i] += int((~r.examples["correct"]).sum())
        print(f"  images {s}..{s + len(xs)}: naive {naive_sec:.0f} s so far (x{len(plans) / len(picked):.1f} "
              f"scaled), " + ", ".join(f"{v} {sec[v]:.0f} s" for v in variants), flush=True)

    naive_total = naive_sec * len(plans) / len(picked)
    how = "all plans run" if len(picked) == len(plans) else f"{len(picked)} of {len(plans)} plans run, scaled"
    print(f"naive    fp32, batch {args.naive_batch_size}: {naive_total:8.1f} s ({how})")
    for v in variants:
        diffs = [abs(wrong[v][i] - w) * 100 / args.images for i, w in zip(picked, naive_wrong)]
        errs = [w * 100 / args.images for w in wrong[v]]
        print(f"engine   {v:7s} batch {args.batch_size}: {sec[v]:8.1f} s  speed-up {naive_total / sec[v]:5.2f}x  "
              f"max |error - naive| {max(diffs):.3f} pp on {len(picked)} plans "
              f"(plan errors {min(errs):.2f}..{max(errs):.2f}%)")


if __name__ == "__main__":
    main()
