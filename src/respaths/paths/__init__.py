"""Paths through a residual network: which exist, which carry the gradient, which survive a lesion.

Veit et al. (2016), section 5. Unrolled, n residual blocks y = post(shortcut(x) + branch(x)) are
2^n paths; a path of length k passes through the branch of k blocks and the shortcut of the rest.

  1. Path lengths     C(n, k) paths of length k; for a *linear* residual network the output is
                      exactly the sum of its 2^n path outputs (`unrolled_paths`).
  2. Path gradients   the paper's protocol: forward a training batch, then backpropagate through
                      the branch of k random blocks and the shortcut of the others, and record the
                      gradient norm at the input of block 0 (of the cross-entropy; for a Hugging Face
                      decoder with --text, of the LM loss: path_loss, text_paths). `PathGradients` does one forward per
                      batch, keeping each block's vjp (torch.func), then backpropagates many sampled
                      paths through them, once per distinct suffix of choices; no weight gradients.
                      EngineOptions(fast=True) (`respaths paths --fast`, fast_network): the same on the lesion
                      engine's rewrite, BN folded into convolutions and channels_last (norms within ~1.5e-3 relative).
  3. Effective paths  total gradient per length = C(n, k) x mean norm; the shortest range of
                      lengths holding 90% of it (the paper: 5-17 of 54 blocks, 0.45% of paths).
  4. Surviving paths  after deleting d blocks, C(n-d, x) / C(n, x) of the length-x paths are
                      intact; `count_surviving` counts them from a plan's steps instead.

Result file of `respaths paths` (run_path_gradients; ResultStore, OUT/paths.json and .csv), one
record per length k:
  key "k007", length, paths C(n, k), path_fraction C(n, k) / 2^n, samples,
  mean, std, ci [low, high] (Student t, 95%) of the gradient norm of one sampled path,
  total = paths x mean, seconds (the only field that differs between runs);
and at the top level `blocks` and `effective` {share, lengths [lo, hi], gradient_share, path_share,
measured_lengths}. Rows of check_surviving: key, deleted (d), counted and analytic (per x = 0..n), match.

Modules: counting (1, 3, 4), gradients (2), experiment (the result file). Their names are importable
from here too.
"""
from .counting import (  # noqa: F401
    check_surviving,
    count_surviving,
    effective_range,
    effective_surviving,
    linear_residual_forward,
    path_counts,
    path_fractions,
    path_share,
    surviving_fraction,
    total_gradient,
    unrolled_paths)
from .gradients import (  # noqa: F401
    EvalBatchNormAsScale,
    PathGradients,
    fast_network,
    frozen,
    length_generator,
    length_key,
    length_record,
    lengths_to_measure,
    measure_path_gradients,
    naive_path_gradient,
    path_loss,
    sample_paths,
    summarize)
from .experiment import (  # noqa: F401
    effective_summary,
    paths_main,
    run_path_gradients,
    text_batches_for_paths,
    text_paths)
