"""The test-time study (`respaths study`, quick budget) on the published ResNet-32, against the naive way.

    python benchmarks/study_speed.py                       # 500 test images, ~3 minutes on one core
    python benchmarks/study_speed.py --limit 1000 --naive-paths 96

The study: respaths.study.run.study on akamaster's CIFAR-10 ResNet-32 (15 blocks, ImageNet normalisation)
with the quick budget at fp32 without BatchNorm folding (fast=False, so every number is exact), on
--limit test images, into a temporary directory. Its run.json records each step's wall and CPU time:
  compare  single deletion (16 plans) and random-k deletion (29 plans) through the trie engine, plus
           one more whole-net pass for the test error;
  reorder  28 plans of k swapped blocks, through the trie engine;
  paths    24 sampled paths for each length 0..15 on one training batch of 32: one forward pass,
           the paths backpropagated together, sharing the work of paths with a common suffix.
The naive way, in the same process on the same images: for every plan in the study's result files
(the baseline once per file, as each file holds it), a plain forward of view(x, plan)
(core.run_plan) per batch of the study's batch size, counting errors; and for every sampled path
(the same paths from the same seeded streams, on the same batch), one forward and autograd backward
(respaths.paths.naive_path_gradient, weights frozen). --naive-paths M times M of the paths (every
m/M-th, so every length stays in the mix) and scales the time linearly, since each naive path is an
independent pass; the output says so.

Checks: every plan's error count from the study equals the naive one (both exact fp32 at one batch
size: the engine is bit-identical to run_plan then); each path's naive gradient norm equals the
batched one within 1e-4 relative (the batched norms are recomputed here the way the study computes
them, untimed, and must reproduce the study's per-length means); with every path run naively, the
study's per-length mean and standard deviation equal the naive ones within 1e-4 relative.

The bound. On this CPU convolutions dominate the time of both ways, so the study cannot be faster
than by the ratio of the work each does:
  lesion steps  the naive way runs every step of every plan; the trie runs each distinct prefix once.
                engine.trie_cost counts block steps (a deleted block is a step too, though it costs
                no convolution) and torch's FlopCounterMode gives the convolution FLOPs; but a block's
                time is its convolutions plus its BatchNorm, ReLU and add, which are memory-bound, so
                at batch 500 a first-stage block (16x32x32 activations) takes 2-3.5x as long as a
                last-stage one (64x8x8) of nearly the same FLOPs, and the tries share exactly the early
                blocks. The bound that holds weights each step by its CPU time in a plain forward at
                the study's batch size, measured here (the median of 3 passes; the "bound" column);
  paths         block passes, as in benchmarks/path_gradient_speed.py: the naive way runs n forward
                and k backward per path of length k, the batched way n forward in all and one backward
                per distinct suffix of choices (the "work ratio").
The measured ratio can pass a time-weighted bound only by the noise of the weights (a few percent
under load), or where the engine's steps run faster than a plain forward's. That happens with glibc's
default allocator (--malloc glibc): an activation of 500 images is ~32 MB, freed memory goes back
to the kernel, and each new one is paid for in page faults; the naive loop frees everything after
each plan and so spends a third or more of its CPU time in the kernel, while the engine, keeping
activations alive at its branch points, mostly reuses memory. The ratio then swings from run to run
(2.1-2.8x in total, up to 77% above the bound) with the load on the machine. By default
(--malloc keep) both ways keep their freed memory (mallopt), and the ratio is that of the work.

Both ways run with --threads torch threads (1 by default: on a shared 2-core machine, 2 threads
oversubscribe the cores) and are compared in CPU time of this process, which another job on the
machine slows less than the wall clock; both are printed. Without the published weights or
CIFAR-10 the benchmark falls back to random weights on respaths' synthetic dataset (256 16x16
images) and says so: the ratios are then of that smaller problem. Not a test: the times depend on
the machine.

Measured on the 2-core AMD EPYC this was written on (AVX2), 1 thread, defaults, load ~4 from
another job, 3.5 minutes in all (CPU seconds, study vs naive):
  compare  14.6 vs 24.3 s = 1.67x (bound 1.85x; block steps 1.50x, FLOPs 1.57x)
  reorder  15.9 vs 18.5 s = 1.16x (bound 1.37x; block steps 1.26x, FLOPs 1.27x)
  paths     8.6 vs 29.6 s = 3.45x (work ratio 5.30x)
  total    39.1 vs 72.4 s = 1.85x; every error count equal, path norms within 3.6e-7 relative.
With --malloc glibc, two runs: total 46.2 vs 98.0 s = 2.12x and 43.3 vs 122.9 s = 2.84x, the naive
lesion steps spending 23 and 41 s of their 68 and 90 s CPU in the kernel (the study 8-11 s of 44-47).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import respaths
from respaths.core import DELETE, PARALLEL, RUN, Plan, UserError, full_plan, run_plan
from respaths.data import batches, load_dataset
from respaths.engine import build_trie, trie_cost
from respaths.experiments.lesion import DEFAULT_CHUNK
from respaths.opening import load_model
from respaths.opening import NORMALIZE
from respaths.paths import PathGradients, frozen, length_generator, naive_path_gradient, sample_paths
from respaths.study.run_record import cpu_time
from respaths.study.run import budget, study

WORK = Path(__file__).resolve().parents[2]  # the folder holding the checkout, shared/ and data/
WEIGHTS = WORK / "shared" / "pretrained" / "akamaster-cifar10" / "resnet32-d509ac18.th"
SPEC = "respaths:resnet32"

# the study's result files of each lesion step, and what the step does
LESION_STEPS = {"compare": ("compare/resnet-lesion-single", "compare/resnet-lesion-random"),
                "reorder resnet": ("reorder-resnet",)}


def parse_plan(key: str) -> Plan:
    """A plan from its key, 'r0 r1 d2 r3' or 'p1+2' (core.Plan.key)."""
    ops = {"r": RUN, "d": DELETE}
    steps = [(PARALLEL, tuple(int(i) for i in t[1:].split("+"))) if t[0] == "p" else (ops[t[0]], int(t[1:]))
             for t in key.split()]
    return Plan(tuple(steps))


def keep_freed_memory() -> bool:
    """glibc: serve blocks up to 32 MiB (an activation of 500 images at 16x32x32) from the heap and
    never hand freed heap memory back to the kernel, so that no pass pays page faults for fresh pages.
    False where the C library has no mallopt."""
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
    except (OSError, AttributeError):
        return False


class Timer:
    """Wall, CPU and system CPU seconds (all threads of this process) of a with-block, added up."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.sys = 0.0

    def __enter__(self) -> "Timer":
        self._w, self._c, self._s = time.perf_counter(), cpu_time(), resource.getrusage(resource.RUSAGE_SELF).ru_stime
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += cpu_time() - self._c
        self.sys += resource.getrusage(resource.RUSAGE_SELF).ru_stime - self._s


def step_flops(view, x) -> dict:
    """Convolution and matmul FLOPs per image of the stem, the head, and each block run or deleted."""
    def flops(fn, *args) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn(*args)
        return counter.get_total_flops()

    view.probe(x[:1])
    cost = {"stem": flops(view.stem, x[:1]), "head": flops(view.head, torch.zeros(1, *view.blocks[-1].out_shape))}
    for b in view.blocks:
        h = torch.zeros(1, *b.in_shape)
        cost[(RUN, b.index)] = flops(b, h)
        cost[(DELETE, b.index)] = flops(b.deleted, h)
    return cost


def step_seconds(view, x, passes: int = 3) -> dict:
    """CPU seconds of the stem, the head, and each block run or deleted on the batch x: the median of
    `passes` plain forward passes (each block also deleted on the way, its result dropped)."""
    seen: dict = {}

    def timed(key, fn, *args):
        c = time.process_time()
        out = fn(*args)
        seen.setdefault(key, []).append(time.process_time() - c)
        return out

    with torch.inference_mode():
        for _ in range(passes):
            h = timed("stem", view.stem, x)
            for b in view.blocks:
                timed((DELETE, b.index), b.deleted, h)
                h = timed((RUN, b.index), b, h)
            timed("head", view.head, h)
    return {key: float(np.median(v)) for key, v in seen.items()}


def naive_work(plans: list[Plan], cost: dict) -> float:
    """Each plan run on its own: the stem, every step and the head, per plan."""
    return sum(cost["stem"] + sum(cost[s] for s in p.steps) + cost["head"] for p in plans)


def trie_work(plans: list[Plan], cost: dict) -> float:
    """The trie's: the stem once, each distinct prefix's last step once, the head per plan."""
    def walk(node) -> float:
        return sum(cost[c.step] + walk(c) for c in node.children.values())
    return cost["stem"] + walk(build_trie(plans)) + cost["head"] * len(plans)


def as_run(plans: list[Plan]) -> list[list[Plan]]:
    """The engine calls of run_experiment: plans sorted by steps, cut into chunks, the baseline in each."""
    base = [p for p in plans if p == full_plan(len(p.steps))][:1]
    rest = sorted((p for p in plans if p not in base), key=lambda p: p.steps)
    return [base + rest[s:s + DEFAULT_CHUNK] for s in range(0, len(rest), DEFAULT_CHUNK)] or [base]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(WEIGHTS), help="akamaster's resnet32 .th (default: shared/pretrained)")
    p.add_argument("--data-dir", default=os.environ.get("RESPATHS_DATA") or str(WORK / "data"),
                   help="where CIFAR-10 (cifar-10-batches-py) is (default: $RESPATHS_DATA, else data/ beside shared/)")
    p.add_argument("--limit", type=int, default=500, help="test images for the lesion steps")
    p.add_argument("--naive-paths", type=int, default=None,
                   help="run the naive way on this many of the sampled paths (evenly spread) and scale its time")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both ways (0: torch's default)")
    p.add_argument("--malloc", choices=["keep", "glibc"], default="keep",
                   help="keep: freed memory stays with the process (mallopt), so both ways run without page "
                        "faults and the ratio is the work's; glibc: the C library's defaults, as respaths runs, "
                        "where the naive way spends a third or more of its CPU time in the kernel")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", help="write the study here instead of a temporary directory (must not exist)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = "glibc's defaults"
    if args.malloc == "keep":
        malloc = ("freed memory kept (mallopt)" if keep_freed_memory()
                  else "glibc's defaults (no mallopt in this C library)")

    # --- what to run on: the published net and CIFAR-10, else random weights on synthetic images
    weights, dataset, normalize = args.weights, "cifar10", "imagenet"
    missing = [] if Path(weights).is_file() else [f"no weights at {weights}"]
    try:
        load_dataset("cifar10", args.data_dir, split="test", limit=1, download=False)
    except UserError:
        missing.append(f"no CIFAR-10 under {args.data_dir}")
    if missing:
        print(f"FALLBACK ({'; '.join(missing)}): random weights on respaths' synthetic dataset (256 test images, "
              f"3x16x16); the times and ratios below are of that smaller problem, not of the published ResNet-32.")
        weights, dataset, normalize = None, "synthetic", None
    b = budget("quick", fast=False, seed=args.seed, test_limit=args.limit)

    if args.keep and Path(args.keep).exists():  # the study would resume it and time nothing
        sys.exit(f"--keep {args.keep} exists; give a new directory.")
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="study-speed-")
    Path(args.keep or tmp.name).mkdir(parents=True, exist_ok=True)
    out = Path(args.keep or tmp.name) / "run"

    # --- the naive way's own copy of the net and the same images the study will use
    torch.manual_seed(b.seed)
    model, _ = load_model(SPEC, weights, num_classes=10, in_channels=3)
    if weights is None:  # the study gets these same random weights from a file
        weights = str(Path(args.keep or tmp.name) / "random-resnet32.pt")
        torch.save(model.state_dict(), weights)
    test = load_dataset(dataset, args.data_dir, split="test", limit=args.limit, download=False)
    train = load_dataset(dataset, args.data_dir, split="train", limit=b.train_limit, download=False)
    mean, std = NORMALIZE["imagenet"] if normalize else (test.mean, test.std)
    test, train = replace(test, mean=mean, std=std), replace(train, mean=mean, std=std)
    test_batches = list(batches(test, b.eval_batch_size))
    gen = torch.Generator().manual_seed(b.seed)  # the study's path batches: a seeded shuffle of the training set
    path_batches = [xy for _, xy in zip(range(b.path_batches), batches(train, b.path_batch_size, train=True,
                                                                          generator=gen))]
    with torch.inference_mode():
        view = respaths.view(model.eval(), test_batches[0][0][:2])
    n = len(view)
    label = "random weights" if missing else Path(weights).name
    print(f"{SPEC} ({label}): {n} blocks; {dataset}, {len(test)} test images in batches of {b.eval_batch_size}; paths on {b.path_batches} training batch(es) of "
          f"{b.path_batch_size}; quick budget, fast=False; {torch.get_num_threads()} thread(s); malloc: {malloc}; "
          f"machine load {os.getloadavg()[0]:.1f}", flush=True)

    # warm-up at both shapes, untimed, so that neither way pays oneDNN's first-call setup
    with torch.inference_mode():
        run_plan(view, test_batches[0][0])
    with frozen(view):
        naive_path_gradient(view, *path_batches[0], [0])

    # --- the study
    print("study ...", flush=True)
    whole = Timer()
    with whole:
        study(SPEC, out, weights=weights, budget_name=b, limit=args.limit, seed=b.seed, data_dir=args.data_dir,
              progress=False, report=False, dataset=dataset, normalize=normalize, log=lambda s: print("  " + s))
    steps = json.loads((out / "run.json").read_text())["steps"]
    res = out / "results"

    # --- the naive way, lesion steps: every plan of every result file, a plain forward per batch
    failures: list[str] = []
    flops = step_flops(view, test_batches[0][0])
    seconds = step_seconds(view, test_batches[0][0])  # per batch of the study's size
    rows = []  # (step, what, study's run.json entry, naive Timer, bound, bound explained)
    for name, files in LESION_STEPS.items():
        timer = Timer()
        naive_plans, engine_calls, parts = [], [], []
        for f in files:
            records = json.loads((res / f"{f}.json").read_text())["records"]
            plans = [parse_plan(r["plan"]) for r in records]
            with timer, torch.inference_mode():
                wrong = [0] * len(plans)
                for x, y in test_batches:
                    for j, plan in enumerate(plans):
                        wrong[j] += int((run_plan(view, x, plan).argmax(1) != y).sum())
            bad = [(r["key"], r["errors"], w) for r, w in zip(records, wrong) if r["errors"] != w]
            failures += [f"{f}: {k}: study {s} errors, naive {w}" for k, s, w in bad]
            print(f"  naive {f}: {len(plans)} plans, errors {'equal on every plan' if not bad else 'DIFFER'} "
                  f"(the study's {min(r['errors'] for r in records)}..{max(r['errors'] for r in records)} "
                  f"of {records[0]['n']})", flush=True)
            naive_plans += plans
            engine_calls += as_run(plans)
            parts.append(f"{len(plans)} {f.split('lesion-')[-1].split('-')[0]}")
        assert sum(len(call) for call in engine_calls) == len(naive_plans)
        # compare_views runs the whole net once more for its test error: part of the study's work
        extra = [[full_plan(n)]] if name == "compare" else []
        ratios = {}
        for what, cost in (("flops", flops), ("seconds", seconds)):
            ratios[what] = naive_work(naive_plans, cost) / sum(trie_work(call, cost) for call in engine_calls + extra)
        separate = sum(len(q.steps) for q in naive_plans)
        trie = sum(trie_cost(call)[0] for call in engine_calls + extra)
        bound = (f"block steps {separate} / {trie} (trie_cost) = {separate / trie:.2f}x; conv FLOPs "
                 f"{ratios['flops']:.2f}x; block steps weighted by their CPU time here {ratios['seconds']:.2f}x")
        rows.append((name, " + ".join(parts) + " plans", steps[name], timer, ratios["seconds"], bound))

    # --- the naive way, paths: one forward and backward per sampled path
    chosen = {k: sample_paths(n, k, b.path_samples, length_generator(b.seed, k)) for k in range(n + 1)}
    every = [(k, j) for k in range(n + 1) for j in range(b.path_samples)]
    m = len(every)
    picked = range(m) if not args.naive_paths else sorted(set(np.linspace(0, m - 1, min(args.naive_paths, m))
                                                              .round().astype(int).tolist()))
    records = {r["length"]: r for r in json.loads((res / "paths-resnet.json").read_text())["records"]}
    with frozen(view):
        # the batched norms as the study computes them (untimed): the same paths, batches and chunks
        kept, batched = {}, {}
        for k in range(n + 1):
            norms = torch.zeros(b.path_samples, dtype=torch.float64)
            for bi, (x, y) in enumerate(path_batches):
                mine = torch.arange(bi, b.path_samples, len(path_batches))
                pg = kept.setdefault(bi, PathGradients(view, x, y))
                norms[mine] = pg.norms(chosen[k][mine], pg.auto_chunk())
            batched[k] = norms
            if not math.isclose(float(np.mean(norms.numpy())), records[k]["mean"], rel_tol=1e-9):
                failures.append(f"paths k={k}: the batched norms recomputed here do not reproduce the study's mean")
        timer = Timer()
        naive = {}
        with timer:
            for i in picked:
                k, j = every[i]
                x, y = path_batches[j % len(path_batches)]
                g = naive_path_gradient(view, x, y, chosen[k][j].nonzero().flatten().tolist())
                naive[(k, j)] = float(torch.linalg.vector_norm(g))
    rel = max(abs(v - float(batched[k][j])) / abs(float(batched[k][j])) for (k, j), v in naive.items())
    if rel > 1e-4:
        failures.append(f"paths: a naive gradient norm differs from the batched one by {rel:.1e} relative")
    if len(picked) == m:  # every path run naively: the study's summaries themselves
        for k, r in records.items():
            v = np.array([naive[(k, j)] for j in range(b.path_samples)])
            if not (math.isclose(v.mean(), r["mean"], rel_tol=1e-4)
                    and abs(v.std(ddof=1) - r["std"]) <= 1e-4 * r["mean"]):
                failures.append(f"paths k={k}: naive mean {v.mean():.6g} std {v.std(ddof=1):.6g}, "
                                f"study {r['mean']:.6g} {r['std']:.6g}")
    scale = m / len(picked)
    naive_timer = Timer()
    naive_timer.wall, naive_timer.cpu = timer.wall * scale, timer.cpu * scale
    all_chosen = torch.cat([chosen[k] for k in range(n + 1)])
    naive_passes = m * n * 1 + int(all_chosen.sum())  # every block forward, the chosen branches backward
    batched_passes = n * len(kept) + sum(pg.branch_rows for pg in kept.values())
    print(f"  naive paths: {len(picked)} of {m} paths run" + (f", time scaled by {scale:.1f}" if scale > 1 else "")
          + f"; largest relative difference of a norm from the batched one {rel:.1e}", flush=True)
    rows.append(("paths resnet", f"{m} paths" + (f", naive {len(picked)} run, SCALED" if scale > 1 else ""),
                 steps["paths resnet"], naive_timer,
                 naive_passes / batched_passes,
                 f"block passes {naive_passes} / {batched_passes} = {naive_passes / batched_passes:.2f}x (work ratio)"))

    # --- the table
    print(f"\n{'step':16s} {'what':34s} {'study CPU':>9s} {'naive CPU':>9s} {'ratio':>6s} {'bound':>6s}   "
          f"{'study wall':>10s} {'naive wall':>10s} {'ratio':>6s}")
    tot = [0.0, 0.0, 0.0, 0.0]
    for name, what, s, t, bound, _ in rows:
        print(f"{name:16s} {what:34s} {s['cpu_seconds']:8.1f}s {t.cpu:8.1f}s {t.cpu / s['cpu_seconds']:5.2f}x "
              f"{bound:5.2f}x   {s['seconds']:9.1f}s {t.wall:9.1f}s {t.wall / s['seconds']:5.2f}x")
        tot = [tot[0] + s["cpu_seconds"], tot[1] + t.cpu, tot[2] + s["seconds"], tot[3] + t.wall]
    print(f"{'total':16s} {'':34s} {tot[0]:8.1f}s {tot[1]:8.1f}s {tot[1] / tot[0]:5.2f}x {'':6s}   "
          f"{tot[2]:9.1f}s {tot[3]:9.1f}s {tot[3] / tot[2]:5.2f}x")
    surviving = steps.get("surviving resnet", {})
    print(f"(the study's surviving-paths check, {surviving.get('cpu_seconds', 0):.1f} s CPU, is the same counting "
          f"either way and is left out; the whole study() call took {whole.cpu:.1f} s CPU, {whole.wall:.1f} s wall, "
          f"opening the net and loading the data included)")
    print("bounds:")
    for name, _, _, t, bound, line in rows:
        ratio = t.cpu / steps[name]["cpu_seconds"]
        where = "within it" if ratio <= bound else f"ABOVE it by {100 * (ratio / bound - 1):.0f}%"
        print(f"  {name:16s} {line}: measured {ratio:.2f}x, {where}")
    stage = [float(np.mean([seconds[(RUN, b.index)] for b in view.blocks if b.stage == st]))
             for st in sorted({b.stage for b in view.blocks})]
    print(f"On this CPU convolutions dominate both ways' time, so no ratio can exceed its bound (beyond the few "
          f"percent of noise in the measured weights): the study does less of the same work, each pass no faster. "
          f"A block's time is its convolutions plus its BatchNorm, ReLU and add, "
          f"which are memory-bound, so here a block of the first stage takes {1000 * stage[0]:.0f} ms per batch and "
          f"one of the last {1000 * stage[-1]:.0f} ms at nearly equal FLOPs; the tries share the early blocks, so "
          f"the lesion bounds that hold are the time-weighted ones (the bound column).")
    lesion_naive = [t for name, _, _, t, _, _ in rows if name in LESION_STEPS]
    print(f"System CPU time (the kernel mapping and zeroing pages for new activations; see --malloc): "
          f"{whole.sys:.1f} s of the "
          f"study() call's {whole.cpu:.1f} s, {sum(t.sys for t in lesion_naive):.1f} s of the naive lesion steps' "
          f"{sum(t.cpu for t in lesion_naive):.1f} s.")
    if failures:
        print("CHECK FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"check: every plan's error count equal between the two ways (exact fp32); "
          f"every naive path gradient norm within {rel:.1e} relative of the batched one"
          + (", the study's per-length means and stds within 1e-4 of the naive ones" if len(picked) == m else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
