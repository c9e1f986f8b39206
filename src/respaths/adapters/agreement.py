"""Does a view compute what its model computes? `check_view(view, example_input)` runs both on the
example and, where the full plan's output differs from the model's own, names the first place that
differs, in one sentence (a UserError).

The model runs once with hooks that record what each block's module receives and returns. Each
block of the view then runs on its module's recorded input, so a block is judged on its own, not on
what earlier blocks passed it; blocks that share a module (a transformer layer split into attention
and MLP) run in turn and are judged on the module's output. When every block agrees, the stem (its
output against block 0's recorded input) or else the head is named.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import inspect

import torch
from torch import Tensor, nn

from ..core import ResidualView, UserError, eval_mode, run_plan

README = "(docs/study-your-own-model.md, 'Bring your own model')"


def tolerance(reference: Tensor) -> float:
    """How far two float computations of the same thing may differ: rounding, summed in another order."""
    rel = 1e-4 if reference.dtype in (torch.float32, torch.float64) else 2e-2
    return rel * max(1.0, float(reference.abs().max()) if reference.numel() else 1.0)


def distance(a: Any, b: Any) -> float | None:
    """The largest absolute difference of two tensors (None: not two tensors of one shape)."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.shape != b.shape:
        return None
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def agree(a: Any, b: Any) -> bool:
    d = distance(a, b)
    return d is not None and d <= tolerance(b)


def first_tensor(value: Any) -> Tensor | None:
    """A layer's or model's output as one tensor: itself, or the first of a tuple (older transformers)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


def model_output(out: Any, like: Tensor) -> Tensor | None:
    """The tensor of the model's output that the view's head stands for: the output itself, a
    transformers output's logits or last hidden state, else the first tensor of the shape of the view's."""
    if isinstance(out, Tensor):
        return out
    for name in ("logits", "last_hidden_state"):
        t = getattr(out, name, None)
        if isinstance(t, Tensor):
            return t
    values = list(out.values()) if isinstance(out, Mapping) else list(out) if isinstance(out, (tuple, list)) else []
    tensors = [v for v in values if isinstance(v, Tensor)]
    return next((t for t in tensors if t.shape == like.shape), tensors[0] if tensors else None)


def call_model(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        kwargs = {k: v for k, v in inputs.items() if k not in ("labels", "label")}
        if "use_cache" in inspect.signature(model.forward).parameters:
            kwargs["use_cache"] = False  # as the transformers view's stem does: no KV cache, same rounding
        return model(**kwargs)
    return model(inputs)


def record_modules(model: nn.Module, modules: list[nn.Module], inputs: Any) -> tuple[Any, dict[nn.Module, list]]:
    """The model's output, and per module the (input, output) of each of its calls."""
    calls: dict[nn.Module, list] = {m: [] for m in modules}

    def hook(module, args, kwargs, out):
        x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, Tensor)), None)
        calls[module].append((x, first_tensor(out)))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in calls]
    try:
        return call_model(model, inputs), calls
    finally:
        for h in handles:
            h.remove()


def check_view(view: ResidualView, inputs: Any) -> None:
    """Raise a UserError naming the first block (or the stem, or the head) where the view's full plan
    departs from the model's own computation on inputs; see the module docstring."""
    model = view.model
    if model is None or not isinstance(model, nn.Module):
        return
    modules = list(dict.fromkeys(b.module for b in view.blocks if isinstance(b.module, nn.Module)))
    with eval_mode(model), torch.no_grad():
        got = run_plan(view, inputs)
        if not isinstance(got, Tensor):
            return
        out, calls = record_modules(model, modules, inputs)
        want = model_output(out, got)
        if want is None or agree(got, want):
            return
        d = distance(got, want)
        off = (f"its output has shape {tuple(got.shape)} where the model's has {tuple(want.shape)}" if d is None
               else f"its output is up to {d:.3g} away from the model's")
        where = first_difference(view, inputs, calls)
    fix = (f"check the declaration's {where[1]} in respaths.declare {README}" if view.adapter == "declared" else
           f"this {type(model).__name__} computes something other than the {view.adapter} adapter expects; "
           f"declare it with respaths.declare {README}")
    raise UserError(f"the view of {type(model).__name__} does not compute what the model does on the example input "
                    f"({off}): {where[0]}; {fix}.")


def first_difference(view: ResidualView, inputs: Any, calls: dict[nn.Module, list]) -> tuple[str, str]:
    """(what differs, which keywords to check), from the recorded module calls."""
    x0 = view.stem(inputs)  # also what a transformers view's blocks then read their mask and positions from
    groups: list[list[Any]] = []
    for b in view.blocks:  # consecutive blocks of one module run in turn on its input
        if groups and b.module is not None and groups[-1][0].module is b.module:
            groups[-1].append(b)
        else:
            groups.append([b])
    for group in groups:
        seen = calls.get(group[0].module, []) if group[0].module is not None else []
        if len(seen) != 1 or seen[0][0] is None or seen[0][1] is None:
            continue  # no module, or one the model calls more than once: not judged on its own
        x, y = seen[0]
        if distance(x, x0) is not None and group[0].index == 0 and not agree(x0, x):
            return (f"the stem's output is up to {distance(x0, x):.3g} away from what the model's block 0 "
                    f"({group[0].name}) receives"), "stem="
        for b in group:
            x = b(x)
        if not agree(x, y):
            b = group[0]
            d = distance(x, y)
            how = f"up to {d:.3g} away from" if d is not None else f"of shape {tuple(x.shape)}, not"
            return (f"block {b.index} ({b.name}) is the first that differs: on its module's own input it gives "
                    f"outputs {how} the module's"), "branch=, shortcut= and post= (a norm or activation left out?)"
    return "every block agrees with its module, so the difference is in the head", "head="
