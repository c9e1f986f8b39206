"""How the engine runs its plans: one frozen EngineOptions that travels from the command line (or a
caller) to evaluate_plans, instead of loose keyword arguments.

Every field but cache_bytes changes rounding, so each is off (fp32) by default; with the defaults
every plan's logits are bit-identical to core.run_plan at the same batch size.

  dtype        "float32" (exact), or "bfloat16" / "float16": the walk runs under torch.autocast,
               convolutions and matmuls in half precision.
  fast         fold eval-mode BatchNorm into the convolution that feeds it (found by watching one
               forward pass, checked against the unfolded output, undone if it differs), and
               channels_last memory format for 4-d weights and activations (speed.optimise).
  compile      torch.compile of each run block with inductor freezing (BN folded, weights prepacked,
               ReLU and the residual add fused into the convolutions; speed.compiled_block_runner);
               the last batch is padded to the batch size so that shapes never change; ~1 s per
               block up front.
  cache_bytes  the bound on the activations kept at the trie's branch points (trades time for memory;
               no effect on the numbers).

The engine asks the options, not the fields: `block_runner(view)` (the compiled runner, or None),
`prepare(view, probe)` (the model rewritten for the whole walk, undone on exit), `adapt(x,
batch_size)` (each batch as the rewritten model wants it) and `autocast(device)`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch
from torch import Tensor

from ..core import ResidualView, UserError
from .speed import compile_settings, compiled_block_runner, optimise

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
DEFAULT_CACHE_BYTES = 1 << 30


def as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16.")
    return DTYPES[dtype]


@dataclass(frozen=True)
class EngineOptions:
    """The engine's speed tricks and memory bound; see the module docstring for each field."""

    dtype: str | torch.dtype = "float32"
    fast: bool = False
    compile: bool = False
    cache_bytes: int = DEFAULT_CACHE_BYTES

    def __post_init__(self) -> None:
        as_dtype(self.dtype)  # a bad dtype is refused where the options are made

    def block_runner(self, view: ResidualView) -> Callable | None:
        """How the walk runs a block: the compiled runner with compile, else None (the block itself).
        Made before prepare, on the weights as they are, so that chunks of an experiment reuse it."""
        return compiled_block_runner(view) if self.compile else None

    @contextlib.contextmanager
    def prepare(self, view: ResidualView, probe: Any):
        """The model rewritten for the walk, undone on exit: BN folded and channels_last (fast; with
        compile only channels_last, as freezing folds BN anyway) checked on the probe batch, and
        dynamo's settings for one graph per block (compile)."""
        with contextlib.ExitStack() as stack:
            if self.fast:
                stack.enter_context(optimise(view, probe, fold=not self.compile))
            if self.compile:
                stack.enter_context(compile_settings(len(view)))
            yield

    def adapt(self, x: Any, batch_size: int) -> Any:
        """A batch as the prepared model takes it: channels_last (fast), padded to batch_size (compile:
        one shape, no recompiles)."""
        if self.fast and isinstance(x, Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.compile and isinstance(x, Tensor) and len(x) < batch_size:
            x = torch.cat([x, x.new_zeros((batch_size - len(x), *x.shape[1:]))])
        return x

    def autocast(self, device: torch.device) -> ContextManager:
        dtype = as_dtype(self.dtype)
        return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
