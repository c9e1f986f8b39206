"""Path-gradient sampling: batched (respaths.paths.PathGradients) vs one autograd pass per path.

The naive way runs, for every sampled path, a full forward and autograd backward of the model with
the unchosen branch or shortcut of each block detached. Two naive references are timed on the same
paths: "input" (respaths.paths.naive_path_gradient: autograd.grad of the input alone, weights
frozen, the strict comparison) and "full" (loss.backward() on a model whose weights require grad,
as a training-style loop and the issue's "full autograd backward" run it: weight gradients too).
The batched way forwards the batch once and backpropagates many paths together, sharing the work
of paths that agree on their last blocks; it is timed exact and with --fast (eval BatchNorm folded
into the convolutions, channels_last: `respaths paths --fast`). All get the same paths on the same
batch of a resnet110-shaped model (54 blocks, CIFAR-sized input); the script checks they agree and
prints the time of each and the ratios, in CPU time of this process (steadier than wall-clock time
on a shared machine; both are printed). Not a test: the numbers depend on the machine.

The work itself bounds the ratio to the strict reference: it runs n forward and k backward block
passes per path, the batched way k backward passes less what paths share, so over lengths 0..n
drawn evenly the ratio of block passes is about 3-4.5 (printed as "work ratio"); the rest is how
fast each pass runs.

    python benchmarks/path_gradient_speed.py [--samples 2] [--batch-size 16] [--threads 1]
    python benchmarks/path_gradient_speed.py --model preresnet110 --samples 20 --naive-paths 110
"""
import argparse
import sys
import time

import torch

import respaths
from respaths.engine import EngineOptions
from respaths.paths import PathGradients, fast_network, frozen, naive_path_gradient, sample_paths

def naive_full_backward(view, x, y, chosen):
    return naive_path_gradient(view, x, y, chosen, full_backward=True)


p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--model", default="resnet110")
p.add_argument("--samples", type=int, default=2, help="sampled paths per length k = 0..n")
p.add_argument("--batch-size", type=int, default=16)
p.add_argument("--chunk", type=int, default=64, help="paths per batched backward")
p.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared)")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--naive-paths", type=int, default=None,
               help="time the naive way on this many of the paths (every m/N-th, so all lengths stay in the mix) "
                    "and scale its time to all of them: each naive path is an independent pass, so its time is "
                    "linear in the number of paths; lets the batched way run the paper's many samples per length")
p.add_argument("--naive", default="input,full",
               help="naive references to time: input (autograd.grad of the input alone, weights frozen: the "
                    "strict comparison) and/or full (loss.backward() with weights requiring grad, as a plain "
                    "training-style loop and the issue's 'full autograd backward' run it)")
args = p.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
model = respaths.build_model(args.model)  # random weights: the speed does not depend on training
x = torch.randn(args.batch_size, 3, 32, 32)
y = torch.randint(0, 10, (args.batch_size,))
view = respaths.view(model, x[:1])
n = len(view)
gen = torch.Generator().manual_seed(args.seed)
chosen = torch.cat([sample_paths(n, k, args.samples, gen) for k in range(n + 1)])
print(f"{args.model}: {n} blocks, batch {args.batch_size}, {len(chosen)} paths "
      f"({args.samples} per length 0..{n}), {torch.get_num_threads()} thread(s)")

def batched(fast: bool) -> tuple[PathGradients, torch.Tensor, float, float]:
    """The batched way, as `respaths paths` runs it: exact, or --fast (BN folded, channels_last)."""
    with fast_network(view, x, EngineOptions(fast=fast)):
        PathGradients(view, x, y, channels_last=fast).norms(chosen[:4])  # warm-up at this shape, untimed
        w, c = time.perf_counter(), time.process_time()
        pg = PathGradients(view, x, y, channels_last=fast)
        norms = pg.norms(chosen, chunk=args.chunk)
        return pg, norms, time.perf_counter() - w, time.process_time() - c


NAIVE = {  # name: (function, what it is)
    "input": (naive_path_gradient, "naive, input gradient only (autograd.grad, frozen weights)"),
    "full": (naive_full_backward, "naive, full backward (loss.backward(), weight grads too)"),
}
unknown = set(args.naive.split(",")) - set(NAIVE)
if unknown:
    sys.exit(f"--naive names {', '.join(sorted(unknown))}, which is not a naive reference; give a comma-separated "
             f"list of {', '.join(NAIVE)}.")
m = len(chosen)
subset = torch.arange(m) if not args.naive_paths else torch.linspace(0, m - 1, min(args.naive_paths, m)).long()
with frozen(view):
    naive_path_gradient(view, x, y, [0])  # warm-up at this shape, untimed
    batched_runs = {"exact": batched(False), "--fast (BN folded, NHWC)": batched(True)}
    naive_runs = {}
    for key in args.naive.split(","):
        fn, label = NAIVE[key]
        fn(view, x, y, [0])  # warm-up, untimed
        w, c = time.perf_counter(), time.process_time()
        norms = torch.stack([torch.linalg.vector_norm(fn(view, x, y, chosen[i].nonzero().flatten().tolist()))
                             for i in subset]).double()
        naive_runs[key] = (norms, (time.perf_counter() - w) * m / len(subset), (time.process_time() - c) * m / len(subset))

if len(subset) < m:
    print(f"naive timed on {len(subset)} of the {m} paths and scaled by {m / len(subset):.1f}")
pg = batched_runs["exact"][0]
naive_passes = m * n + int(chosen.sum())  # every block forward, the chosen branches backward
print(f"block passes: naive {naive_passes}, batched {n + pg.branch_rows} (work ratio {naive_passes / (n + pg.branch_rows):.2f})")
for key, (_, w, c) in naive_runs.items():
    print(f"{NAIVE[key][1]:62s} CPU {c:7.2f} s ({1000 * c / m:6.1f} ms/path), wall {w:7.2f} s")
for name, (_, norms, w, c) in batched_runs.items():
    print(f"{'batched ' + name + ': one forward, shared vjps':62s} CPU {c:7.2f} s ({1000 * c / m:6.1f} ms/path), wall {w:7.2f} s")
for name, (_, norms, w_b, c_b) in batched_runs.items():
    for key, (slow, w_n, c_n) in naive_runs.items():
        rel = ((norms[subset] - slow).abs() / slow.abs()).max().item()
        print(f"speed-up of batched {name.split(' ')[0]} over naive {key}: {c_n / c_b:.2f}x in CPU time, "
              f"{w_n / w_b:.2f}x in wall time; largest relative difference in the norms {rel:.1e}")
