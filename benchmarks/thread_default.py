"""Which default --threads does not oversubscribe a busy machine: one fixed piece of work (forward passes
of a CIFAR ResNet-20 on synthetic images, what every lesion and study step does) in a fresh process with
torch's thread count set to each value, tries alternated, on the machine as it is.

    python benchmarks/thread_default.py                    # threads 1 and all cores, 3 tries each
    python benchmarks/thread_default.py --busy 1           # plus one spinning process beside it

Prints per try: threads, wall seconds, CPU seconds of the worker, and the 1-minute load average before
the try; then the median of each and what respaths.cli.default_threads() would choose right now.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

WORK = """
import time, torch
from respaths.models import build_model
torch.set_num_threads({threads})
torch.manual_seed(0)
model = build_model("resnet20").eval()
x = torch.randn({batch}, 3, 32, 32)
with torch.inference_mode():
    model(x)  # warm-up: oneDNN picks its kernels
    for _ in range({passes}):
        model(x)
"""


def run(threads: int, batch: int, passes: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one worker process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", WORK.format(threads=threads, batch=batch, passes=passes)], check=True,
                   env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = len(os.sched_getaffinity(0))
    p.add_argument("--threads", default=f"1,{cores}", help="thread counts to compare")
    p.add_argument("--tries", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--passes", type=int, default=8)
    p.add_argument("--busy", type=int, default=0, help="spinning processes to start beside the work")
    a = p.parse_args()
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    try:
        results: dict[int, list[tuple[float, float]]] = {}
        for _ in range(a.tries):
            for n in (int(v) for v in a.threads.split(",")):
                load = os.getloadavg()[0]
                wall, cpu = run(n, a.batch, a.passes)
                results.setdefault(n, []).append((wall, cpu))
                print(f"threads {n}: wall {wall:.1f} s, CPU {cpu:.1f} s (load before {load:.1f})", flush=True)
    finally:
        for s in spinners:
            s.kill()
    for n, rs in results.items():
        print(f"threads {n}: median wall {statistics.median(w for w, _ in rs):.1f} s, "
              f"median CPU {statistics.median(c for _, c in rs):.1f} s")
    from respaths.cli import default_threads
    print(f"{cores} cores, load {os.getloadavg()[0]:.1f}: respaths' default would be {default_threads()} thread(s)")


if __name__ == "__main__":
    main()
