"""Path gradients (respaths.paths.gradients): batched path gradients against a naive autograd pass,
the sampling protocol, the Student-t summary."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import respaths
from respaths import paths
from respaths.core import UserError

from tests.paths.helpers import tiny


# ---------------------------------------------------------------------------------------------
# 2. path gradients: batched == naive

MODELS = [("resnet14", "A", {}),  # post = ReLU, zero-pad shortcuts at the two downsampling blocks
          ("preresnet14", "A", {}),  # post = identity, the paper's model
          ("resnet14", "B", {}),  # projection (conv + BN) shortcuts
          ("preresnet14", "A", {"stochastic_depth": 0.5})]  # branches scaled by survival at test time


@pytest.mark.parametrize("name,shortcut,options", MODELS)
def test_batched_path_gradients_equal_naive(name, shortcut, options):
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        view, x, y = tiny(name, shortcut, dtype, **options)
        n = len(view)
        gen = torch.Generator().manual_seed(1)
        chosen = torch.cat([paths.sample_paths(n, k, 2, gen) for k in range(n + 1)])
        with paths.frozen(view):
            pg = paths.PathGradients(view, x, y)
            grads = pg.grads(chosen)
            norms = pg.norms(chosen, chunk=5)
            pg.vmap = not pg.vmap  # the other way of applying the vjps (per row on a CPU, vmap elsewhere)
            assert torch.allclose(pg.grads(chosen), grads, rtol=tol, atol=tol * grads.abs().max())
            for j, row in enumerate(chosen):
                naive = paths.naive_path_gradient(view, x, y, row.nonzero().flatten().tolist())
                assert grads[j].shape == naive.shape
                assert torch.allclose(grads[j], naive, rtol=tol, atol=tol * naive.abs().max()), (dtype, j)
                assert norms[j].item() == pytest.approx(naive.norm().item(), rel=tol)
                if j % 7 == 0:  # loss.backward() with weights requiring grad: the same input gradient
                    full = paths.naive_path_gradient(view, x, y, row.nonzero().flatten().tolist(), full_backward=True)
                    assert torch.allclose(full, naive, rtol=tol, atol=tol * naive.abs().max())
                    assert not any(p.requires_grad for p in view.model.parameters())  # frozen again
                    assert all(p.grad is None for p in view.model.parameters())  # the caller's .grad kept
        assert len(set(np.round(norms.numpy(), 8))) > n  # different paths, different gradients


@pytest.mark.parametrize("name,shortcut", [("resnet14", "A"), ("preresnet14", "A"), ("resnet14", "B")])
def test_fast_path_gradients_equal_naive_to_rounding(name, shortcut):
    """--fast (BN folded into convolutions, channels_last) gives the naive pass's gradients to float32
    rounding, and leaves the model as it found it."""
    view, x, y = tiny(name, shortcut)
    n = len(view)
    before = {k: v.clone() for k, v in view.model.state_dict().items()}
    gen = torch.Generator().manual_seed(2)
    chosen = torch.cat([paths.sample_paths(n, k, 2, gen) for k in range(n + 1)])
    with paths.frozen(view):
        with paths.fast_network(view, x):
            folded = sum(isinstance(m, torch.nn.BatchNorm2d) and "forward" in vars(m) for m in view.model.modules())
            pg = paths.PathGradients(view, x, y, channels_last=True)
            assert pg.cotangent.is_contiguous(memory_format=torch.channels_last)
            norms = pg.norms(chosen, chunk=5)
        naive = torch.tensor([paths.naive_path_gradient(view, x, y, row.nonzero().flatten().tolist()).norm().item()
                              for row in chosen], dtype=torch.float64)
    assert folded > 0  # the fast rewrite was really in force
    assert torch.allclose(norms, naive, rtol=1e-4)
    after = view.model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].is_contiguous() for k in before)
    assert not any("forward" in vars(m) for m in view.model.modules())


def test_paths_take_branch_xor_shortcut():
    """Length n is the path through every branch: for a preresnet it is the product of the branch
    Jacobians alone, not the full network's gradient (which sums all 2^n paths)."""
    view, x, y = tiny("preresnet14")
    n = len(view)
    with paths.frozen(view):
        pg = paths.PathGradients(view, x, y)
        grads = pg.grads(torch.tensor([[True] * n, [False] * n]))
        h0 = view.stem(x).detach().requires_grad_()
        with torch.enable_grad():
            h = h0
            for b in view.blocks:
                h = b(h)
            (full,) = torch.autograd.grad(torch.nn.functional.cross_entropy(view.head(h), y), h0)
    assert not torch.allclose(grads[0], full, atol=1e-6)
    assert not torch.allclose(grads[1], full, atol=1e-6)


def test_paths_with_common_suffixes_share_work():
    view, x, y = tiny("resnet14")
    n = len(view)
    with paths.frozen(view):
        pg = paths.PathGradients(view, x, y)
        rows, which = pg.rows(torch.zeros(7, n, dtype=torch.bool))  # seven times the all-shortcut path
        assert len(rows) == 1 and pg.branch_rows == 0
        pg.branch_rows = 0
        rows, which = pg.rows(torch.ones(7, n, dtype=torch.bool))
        assert len(rows) == 1 and pg.branch_rows == n
        pg.branch_rows = 0
        last_only = torch.zeros(2, n, dtype=torch.bool)
        last_only[:, -1] = True
        last_only[1, 0] = True  # differs from path 0 only at block 0
        rows, which = pg.rows(last_only)
        assert pg.branch_rows == 2 and len(rows) == 2  # block n-1 once, block 0 once


def test_plain_layers_are_refused():
    m = respaths.build_model("plain14", in_channels=3, width=0.25).eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(UserError, match="plain layer"):
        paths.PathGradients(respaths.view(m, x), x, torch.zeros(2, dtype=torch.long))


def test_measure_follows_the_protocol():
    """Each record equals the paper's protocol done naively: path j of length k is drawn from the
    length's own stream and backpropagated on batch j mod the number of batches."""
    view, x, y = tiny("resnet14")
    batches = [(x[:2], y[:2]), (x[2:], y[2:])]
    n, samples, seed = len(view), 5, 7
    view.model.train()
    flags = [p.requires_grad for p in view.model.parameters()]
    records = list(paths.measure_path_gradients(view, batches, [0, 3, n], samples=samples, seed=seed, chunk=2))
    assert view.model.training and [p.requires_grad for p in view.model.parameters()] == flags  # restored
    assert [r["key"] for r in records] == ["k000", "k003", f"k{n:03d}"]
    view.model.eval()
    for r in records:
        k = r["length"]
        chosen = paths.sample_paths(n, k, samples, paths.length_generator(seed, k))
        assert (chosen.sum(1) == k).all()
        with paths.frozen(view):
            norms = [paths.naive_path_gradient(view, *batches[j % 2], row.nonzero().flatten().tolist()).norm().item()
                     for j, row in enumerate(chosen)]
        assert r["samples"] == samples and r["paths"] == math.comb(n, k)
        assert r["mean"] == pytest.approx(np.mean(norms), rel=1e-5)
        assert r["std"] == pytest.approx(np.std(norms, ddof=1), rel=1e-4, abs=1e-9)
        assert r["total"] == pytest.approx(math.comb(n, k) * r["mean"])
    # resuming: a skipped length is not computed, the others are the same numbers again
    again = list(paths.measure_path_gradients(view, batches, [0, 3, n], samples=samples, seed=seed, skip=[0]))
    assert [r["mean"] for r in again] == pytest.approx([r["mean"] for r in records[1:]], rel=1e-6)
    with pytest.raises(UserError, match="out of range"):
        list(paths.measure_path_gradients(view, batches, [n + 1], samples=2))


def test_summarize_uses_student_t():
    v = [1.0, 2.0, 4.0, 7.0]
    s = paths.summarize(v, 0.9)
    lo, hi = stats.t.interval(0.9, 3, loc=np.mean(v), scale=np.std(v, ddof=1) / 2)
    assert s["ci"] == pytest.approx([lo, hi]) and s["std"] == pytest.approx(np.std(v, ddof=1))
    assert paths.summarize([3.0, 3.0])["ci"] == [3.0, 3.0]
    assert paths.summarize([3.0])["ci"] == [None, None]
