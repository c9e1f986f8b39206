"""The unraveled view is an identity, not a metaphor (Veit et al. 2016, eq. 2-3).

A residual network of n linear blocks y = x + W_i x computes (I + W_n) ... (I + W_1) x. Multiplying
out the brackets gives 2^n terms, one per path: a path takes the branch W_i of some blocks and the
shortcut of the others. This script builds such a network, evaluates every path on its own, and
checks that their sum is the network's output; it also shows how the 2^n paths spread over lengths.

    python examples/unrolled_sum.py [n]
"""
import sys

import torch

from respaths.paths import linear_residual_forward, path_counts, path_share, unrolled_paths

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
torch.manual_seed(0)
weights = [0.2 * torch.randn(8, 8, dtype=torch.float64) for _ in range(n)]
x = torch.randn(8, dtype=torch.float64)

network = linear_residual_forward(weights, x)
paths = unrolled_paths(weights, x)  # {(i1, i2, ...): W_.. W_i2 W_i1 x}
total = sum(paths.values())
print(f"{n} blocks, {len(paths)} paths; largest difference between the network and the sum of its paths: "
      f"{(network - total).abs().max().item():.1e} (the output is {network.abs().max().item():.2f} in size)")

print("length  paths  norm of the summed output of the paths of that length")
for k, count in enumerate(path_counts(n)):
    part = sum(v for p, v in paths.items() if len(p) == k)
    print(f"{k:6d} {count:6d}  {part.norm().item():.4f}")
print(f"paths of length {n // 4}..{3 * n // 4}: {100 * path_share(n, n // 4, 3 * n // 4):.1f}% of all paths")
