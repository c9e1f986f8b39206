"""How much faster is a lesion sweep on 2 processes (torchrun, gloo) than on 1?

    python benchmarks/distributed_sweep.py [--model resnet32] [--images 512] [--samples 6]

Runs the same `lesion_random` sweep (random sets of k deleted blocks, every k, on a seeded random
resnet and the synthetic test images) three ways, each in fresh processes:

  1 process x 1 thread      the reference;
  2 processes x 1 thread    torchrun --nproc_per_node=2: the plans dealt out across ranks;
  1 process x 2 threads     the same two cores used by torch's intra-op threads instead.

It checks that the three result files hold the same records (wall-clock "seconds" aside) and prints
the sweep's wall time (measured inside the processes, between barriers, so interpreter and torch
start-up are left out; the command's whole wall time is printed too) and the speed-up ratios, and each
process's CPU time in the sweep: 1 process's CPU time over the busiest rank's is the speed-up two
otherwise idle cores would give. Wall times depend on what else the machine is doing: the load
average is printed before and after.
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
    from respaths.lesion import lesion_random
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
    p.add_argument("--skip-threads", action="store_true", help="leave out the 1 process x 2 threads run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs; {args.model}, {args.images} images, "
          f"{args.samples} sets per k")
    python = [sys.executable]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                f"--master_port={free_port()}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = run("1 process x 1 thread", python, args, 1, tmp / "one" / "lesion-random")
        two = run("2 processes x 1 thread", torchrun, args, 1, tmp / "two" / "lesion-random")
        threads = None if args.skip_threads else run("1 process x 2 threads", python, args, 2,
                                                      tmp / "threads" / "lesion-random")
        files = [tmp / run / "lesion-random.json" for run in ("one", "two", "threads")[:2 if threads is None else 3]]
        same = all(records(f) == records(files[0]) for f in files)
    print(f"load average after: {os.getloadavg()}")
    print(f"identical records: {same}")
    print(f"speed-up of 2 processes over 1 process x 1 thread:  {one['sweep_seconds'] / two['sweep_seconds']:.2f}x "
          f"(whole command {one['command_seconds'] / two['command_seconds']:.2f}x)")
    print(f"work split: 1 process's CPU time / the busiest rank's: "
          f"{sum(one['cpu_seconds']) / max(two['cpu_seconds']):.2f}x (the speed-up two idle cores would give)")
    if threads is not None:
        print(f"speed-up of 2 processes over 1 process x 2 threads: "
              f"{threads['sweep_seconds'] / two['sweep_seconds']:.2f}x "
              f"(whole command {threads['command_seconds'] / two['command_seconds']:.2f}x)")
    if not same:
        sys.exit("the result files differ")


if __name__ == "__main__":
    main()
