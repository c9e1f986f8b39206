"""How fast could respaths be on this CPU? Estimated ceilings of the trainer's and lesion engine's speed-ups.

Both speed-up goals (issue 2: the trainer 2.5x over a plain CIFAR loop; issue 3: the single-deletion
sweep 4x over one forward per plan) are ratios of wall times whose bulk is convolutions, and the
convolutions are oneDNN's in both ways. This script estimates, in one process, what each ratio could
at most be (estimates, not proofs: the timings are noisy and the reference times are approximations):

  trainer   a plain fp32 NCHW training step on in-memory tensors (the reference loop without its
            DataLoader) against the time the respaths step spends in convolutions alone
            (channels_last, forward + backward, profiled). If everything but the convolutions were
            free, the trainer could be at most that ratio faster. The full reference of
            benchmarks/train_throughput.py takes about 3.4 s per batch of 128, 0-25% more than the
            plain step, so with it the ceiling would be at most ~1.7x.
  engine    one plain fp32 NCHW forward (the naive way's cost per plan) against the engine's
            --fast forward (BN folded, channels_last), times the trie's saving of block steps on the
            55 single-deletion plans (1539 of 2970): the engine's speed-up if it had no overhead.

    python benchmarks/speed_bounds.py            # resnet110, ~2 minutes on 2 cores

Measured on the 2-core AMD EPYC this was written on (AVX2 only), 2026-11-29, three runs (the machine is
shared and its NCHW timings swing by 30%): trainer ceiling 1.3-1.6x (goal 2.5x): the channels_last step
spends 2.0-2.3 s of 2.6-3.0 s in convolutions, the plain NCHW step takes 2.7-3.4 s; engine ceiling
2.6-3.9x (goal 4x): the --fast forward is 1.3-2.0x the naive one, times the trie's 1.93x.
benchmarks/lesion_speed.py once measured 3.03x, above this script's low end: single runs swing. bf16 would
change both, but without AVX512-BF16 or AMX this CPU emulates it about 8x slower than fp32.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import respaths
from respaths.core import full_plan
from respaths.engine import optimise, trie_cost
from respaths.experiments.lesion import single_plans

sys.path.insert(0, str(Path(__file__).parent))
from lesion_speed import calibrated_model  # noqa: E402  (the same calibrated net the engine benchmark uses)


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN primitives for these shapes
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def convolution_seconds(fn) -> float:
    """CPU seconds fn spends in convolutions (forward and backward), from torch.profiler."""
    with torch.profiler.profile() as prof:
        fn()
    return sum(e.self_cpu_time_total for e in prof.key_averages()
               if e.key in ("aten::mkldnn_convolution", "aten::convolution_backward")) / 1e6


def trainer_bound(model_name: str, batch_size: int, repeats: int) -> None:
    x = torch.randn(batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (batch_size,))
    times = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = respaths.build_model(model_name).train()
        xx = x
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            xx = x.contiguous(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

        def step():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(xx), y).backward()
            optimizer.step()

        times[channels_last] = best_of(step, repeats), convolution_seconds(step)
    (plain, _), (ours, conv) = times[False], times[True]
    print(f"trainer, {model_name} batch {batch_size}: plain NCHW step {plain:.2f} s, channels_last step {ours:.2f} s "
          f"({plain / ours:.2f}x), of which convolutions {conv:.2f} s -> at most {plain / conv:.2f}x "
          f"if nothing but convolutions took time", flush=True)


def engine_bound(model_name: str, batch_size: int, repeats: int) -> None:
    x = torch.randn(batch_size, 3, 32, 32)
    model = calibrated_model(model_name, x, batch_size)
    view = respaths.view(model, x[:2])
    plans = [full_plan(len(view))] + [sp.plan for sp in single_plans(view)]
    trie, separate = trie_cost(plans)
    with torch.inference_mode():
        naive = best_of(lambda: model(x), repeats)
        with optimise(view, x[:8]):
            xc = x.contiguous(memory_format=torch.channels_last)
            fast = best_of(lambda: model(xc), repeats)
    print(f"engine, {model_name} batch {batch_size}: naive forward {naive:.2f} s, --fast forward {fast:.2f} s "
          f"({naive / fast:.2f}x), trie {separate}/{trie} block steps ({separate / trie:.2f}x) -> at most "
          f"{naive / fast * separate / trie:.2f}x with no engine overhead", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet110")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each step (the best is kept)")
    p.add_argument("--train-threads", type=int, default=2, help="threads of the training steps")
    p.add_argument("--engine-threads", type=int, default=1, help="threads of the forwards (as lesion_speed.py)")
    args = p.parse_args()
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    torch.set_num_threads(args.train_threads)
    trainer_bound(args.model, 128, args.repeats)
    torch.set_num_threads(args.engine_threads)
    engine_bound(args.model, 125, args.repeats)


if __name__ == "__main__":
    main()
