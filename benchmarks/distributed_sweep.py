"""How much faster is a lesion sweep on 2 processes (torchrun, gloo) than on 1?

    python benchmarks/distributed_sweep.py [--model resnet32] [--samples 4] [--repeat 3] [--with-threads]

Runs the same `lesion_random` sweep (random sets of k deleted blocks, every k, on a seeded random
resnet and the synthetic test images), each time in fresh processes:

  1 process x 1 thread      the reference;
  2 processes x 1 thread    torchrun --nproc_per_node=2: the plans split across ranks;
  1 process x 2 threads     (--with-threads) the same two cores used by torch's intra-op threads.

The ways take turns, --repeat times, so that a busy spell of a shared machine hits each of them;
the best run of each counts. It checks that every result file holds the same records (wall-clock
"seconds" aside) and prints the sweep's wall time (measured inside the processes between barriers:
interpreter and torch start-up left out; the whole command's wall time is printed too), the speed-up
ratios, and each process's CPU time in the sweep: 1 process's CPU time over the busiest rank's is
the speed-up two otherwise idle cores would give. The load average is printed before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args: argparse.Namespace) -> None:
    import torch

    from respaths import distributed
    from respaths.adapters import view as make_view
    from respaths.data import load_dataset
    from respaths.experiments.lesion import lesion_random
    from respaths.models import build_model

    torch.set_num_threads(args.threads)
    distributed.init()
    torch.manual_seed(0)  # the same weights on every rank
    data = load_dataset("synthetic", split="test", limit=args.images)
    model = build_model(args.model, in_channels=3, num_classes=10).eval()
    view = make_view(model, data.images[:2].float())
    distributed.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    lesion_random(view, data, k=f"1-{len(view) - 1}", samples=args.samples, seed=0, out=args.out,
                  batch_size=128, chunk=args.chunk)
    cpu = distributed.gather(time.process_time() - cpu)  # this process's CPU time, per rank
    distributed.barrier()
    if distributed.is_main():
        print(json.dumps({"sweep_seconds": time.perf_counter() - start, "cpu_seconds": cpu, "blocks": len(view)}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(label: str, launcher: list[str], args: argparse.Namespace, threads: int, out: Path) -> dict:
    cmd = launcher + [__file__, "--worker", "--threads", str(threads), "--out", str(out), "--model", args.model,
                      "--images", str(args.images), "--samples", str(args.samples), "--chunk", str(args.chunk)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{label} failed:\n{done.stderr[-3000:]}")
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    result["command_seconds"] = wall
    cpu = " + ".join(f"{c:.2f}" for c in result["cpu_seconds"])
    print(f"{label:26s} sweep {result['sweep_seconds']:7.2f} s (CPU {cpu} s)   whole command {wall:7.2f} s")
    return result


def records(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(path.read_text())["records"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet32")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--samples", type=int, default=4, help="random sets per k")
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3, help="runs of each way, taken in turn; the best counts")
    p.add_argument("--with-threads", action="store_true", help="also 1 process x 2 threads")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs; {args.model}, {args.images} images, "
          f"{args.samples} sets per k, best of {args.repeat}")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    ways = {"1 process x 1 thread": ([sys.executable], 1), "2 processes x 1 thread": (torchrun, 1)}
    if args.with_threads:
        ways["1 process x 2 threads"] = ([sys.executable], 2)
    results: dict[str, list[dict]] = {label: [] for label in ways}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.repeat):  # in turn, so that a busy spell of the machine hits every way
            for n, (label, (launcher, threads)) in enumerate(ways.items()):
                out = Path(tmp) / f"way{n}-run{i}" / "lesion-random"
                results[label].append(run(label, launcher, args, threads, out))
                files.append(out.with_suffix(".json"))
        same = all(records(f) == records(files[0]) for f in files)
    best = {label: min(rs, key=lambda r: r["sweep_seconds"]) for label, rs in results.items()}
    one, two = best["1 process x 1 thread"], best["2 processes x 1 thread"]
    print(f"load average after: {os.getloadavg()}")
    print(f"identical records: {same}")
    whole = {label: min(r["command_seconds"] for r in rs) for label, rs in results.items()}
    print(f"speed-up of 2 processes over 1 process x 1 thread (best runs): "
          f"{one['sweep_seconds'] / two['sweep_seconds']:.2f}x "
          f"(whole command {whole['1 process x 1 thread'] / whole['2 processes x 1 thread']:.2f}x)")
    ratios = sorted(a["sweep_seconds"] / b["sweep_seconds"]
                    for a, b in zip(results["1 process x 1 thread"], results["2 processes x 1 thread"]))
    print(f"speed-up run by run: {', '.join(f'{r:.2f}x' for r in ratios)}")
    print(f"work split: 1 process's CPU time / the busiest rank's (best runs): "
          f"{sum(one['cpu_seconds']) / max(two['cpu_seconds']):.2f}x (the speed-up two idle cores would give)")
    if args.with_threads:
        threads = best["1 process x 2 threads"]
        print(f"speed-up of 2 processes over 1 process x 2 threads (best runs): "
              f"{threads['sweep_seconds'] / two['sweep_seconds']:.2f}x")
    if not same:
        sys.exit("the result files differ")


if __name__ == "__main__":
    main()
