"""The engine's per-block speed tricks, off by default because they change rounding (EngineOptions,
respaths.engine.options, turns them on): torch.compile of "run this block" (compile=True), and
BatchNorm folding with channels_last (fast=True)."""
from __future__ import annotations

import contextlib
import time
import types
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ..core import ResidualView

_RUNNER: tuple[Any, Any, Any] | None = None  # (view, weights fingerprint, compiled runner)


def compiled_block_runner(view: ResidualView):
    """torch.compile of "run this block", with inductor's freezing: each block's weights become
    constants, so BatchNorm folds into the convolution, weights are prepacked for oneDNN, and ReLU
    and the residual add fuse into the convolutions. That makes one graph per block (the first of a
    structure compiles in seconds, the others reuse its kernels). The runner is kept while the view
    and its weights are unchanged (chunks of an experiment reuse it); new weights get a new runner,
    a fresh code object, so that no graph with stale frozen weights can ever match."""
    global _RUNNER
    model = view.model
    fingerprint = None if model is None else tuple(
        (t.data_ptr(), t._version) for t in list(model.parameters()) + list(model.buffers()))
    if _RUNNER is not None and _RUNNER[0] is view and _RUNNER[1] == fingerprint:
        return _RUNNER[2]
    code = _run_block.__code__
    fresh = types.FunctionType(code.replace(co_name=f"{code.co_name}_{id(view):x}_{time.monotonic_ns()}"),
                               _run_block.__globals__)
    runner = torch.compile(fresh, dynamic=False)
    _RUNNER = (view, fingerprint, runner)
    return runner


def _run_block(block: Any, x: Tensor) -> Tensor:
    return block(x)


def compile_settings(n_blocks: int):
    """Freezing on, and room for one graph per block (dynamo's default allows 8 per function)."""
    import torch._dynamo.config as dc
    import torch._inductor.config as ic
    name = "recompile_limit" if hasattr(dc, "recompile_limit") else "cache_size_limit"
    stack = contextlib.ExitStack()
    stack.enter_context(dc.patch(**{name: max(2 * n_blocks + 8, getattr(dc, name))}))
    stack.enter_context(ic.patch(freezing=True))
    return stack


# ---------------------------------------------------------------------------------------------
# fast=True: BatchNorm folding and channels_last, applied to the model in place and undone after

def conv_bn_pairs(view: ResidualView, x: Any) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Eval-mode BatchNorms whose input is exactly a convolution's output, seen in one forward pass.

    Each module must run once per pass (a shared module could feed different consumers), and the
    convolution's output must not enter a block: there the shortcut uses it too (a pre-activation
    block starts with BN, often right after the stem's convolution)."""
    model = view.model
    outputs: dict[int, tuple[nn.Module, Tensor]] = {}
    entering: dict[int, Tensor] = {}  # activations entering a block
    calls: dict[nn.Module, int] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def conv_hook(m, args, out):
        calls[m] = calls.get(m, 0) + 1
        outputs[id(out)] = (m, out)  # keep out alive so its id is not reused

    def bn_hook(m, args):
        calls[m] = calls.get(m, 0) + 1
        hit = outputs.get(id(args[0])) if args else None
        if hit is not None and hit[1] is args[0] and id(args[0]) not in entering:
            pairs.append((hit[0], m))

    hooks = []
    for m in model.modules():
        if type(m) is nn.Conv2d:
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.BatchNorm2d) and not m.training and m.running_mean is not None:
            hooks.append(m.register_forward_pre_hook(bn_hook))
    try:
        h = view.stem(x)
        for b in view.blocks:
            entering[id(h)] = h
            h = b(h)
        view.head(h)
    finally:
        for h in hooks:
            h.remove()
    return [(c, b) for c, b in pairs if calls[c] == 1 and calls[b] == 1]


@contextlib.contextmanager
def optimise(view: ResidualView, probe: Any, fold: bool = True):
    """Fold BN into convolutions and switch to channels_last, checked on the probe batch; undone on exit."""
    model = view.model
    if model is None:
        yield
        return
    reference = view(probe).float()
    folded: list[tuple[nn.Conv2d, nn.BatchNorm2d, Any, Any]] = []
    saved: dict[Tensor, Tensor] = {}
    try:
        for conv, bn in (conv_bn_pairs(view, probe) if fold else []):
            w, b = torch.nn.utils.fusion.fuse_conv_bn_weights(
                conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
            folded.append((conv, bn, conv.weight, conv.bias))
            conv.weight, conv.bias = w, b
            bn.forward = _identity  # instance attribute: shadows BatchNorm2d.forward until deleted
        for t in list(model.parameters()) + list(model.buffers()):
            if t.dim() == 4:
                saved[t] = t.data
                t.data = t.data.contiguous(memory_format=torch.channels_last)
        if isinstance(probe, Tensor) and probe.dim() == 4:
            probe = probe.contiguous(memory_format=torch.channels_last)
        out = view(probe).float()
        scale = reference.abs().max().clamp_min(1e-6)
        if not torch.allclose(out, reference, rtol=1e-3, atol=1e-3 * float(scale)):
            warnings.warn("folding BatchNorm changed this model's output beyond rounding; evaluating it "
                          "without folding.")
            _unfold(folded)
            folded = []
        yield
    finally:
        _unfold(folded)
        for t, data in saved.items():
            t.data = data


def _identity(x: Tensor) -> Tensor:
    return x


def _unfold(folded: list) -> None:
    for conv, bn, w, b in folded:
        conv.weight, conv.bias = w, b
        del bn.forward
    folded.clear()
