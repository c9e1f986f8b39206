"""Adapters: each file turns one ecosystem's models into a ResidualView (stem -> blocks -> head).

`view(model)` tries them in order; the first that recognises the model wins. An adapter is a
function `adapt(model, example_input=None, **options) -> ResidualView | None` returning None when
the model is not its kind. To support a new ecosystem, add a file with such a function and list it
in ADAPTERS.
"""
from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from ..core import ResidualView, UserError
from .agreement import check_view

# (module name, what it recognises) in the order they are tried.
ADAPTERS: list[tuple[str, str]] = [
    ("declared", "a model with a `respaths_view()` method or declared through respaths.declare"),
    ("respaths_models", "respaths' own models"),
    ("torchvision", "torchvision ResNet, ResNeXt and Wide ResNet"),
    ("timm", "timm ResNets (v1 and v2) and Vision Transformers"),
    ("hf", "Hugging Face transformers: BERT-style encoders, GPT-2 and Llama-style decoders, ViT"),
    # last: torchvision-like classes also have conv1, bn1, layer1.. and would look like this layout
    ("cifar_common", "CIFAR ResNets in the common layout (conv1, bn1, layer1..N, linear or fc)"),
]


def view(model: nn.Module, example_input: Any = None, **options: Any) -> ResidualView:
    """The model seen as stem -> blocks -> head. With example_input, block shapes are probed and the
    view's output is checked against the model's own (adapters.agreement: a mismatch is a UserError
    naming the first block that differs)."""
    if isinstance(model, ResidualView):
        v = model
    else:
        v = None
        for name, _ in ADAPTERS:
            try:
                mod = importlib.import_module(f"{__name__}.{name}")
            except ImportError:  # an optional ecosystem that is not installed
                continue
            v = mod.adapt(model, example_input=example_input, **options)
            if v is not None:
                break
        if v is None:
            tried = "; ".join(what for _, what in ADAPTERS)
            raise UserError(
                f"respaths does not know how to see {type(model).__name__} as stem -> blocks -> head "
                f"(tried: {tried}); declare it with respaths.declare(model, stem=..., blocks=..., head=...) "
                f"as shown in docs/study-your-own-model.md, 'Bring your own model'.")
    if example_input is not None:
        v.probe(example_input)
        if not isinstance(model, ResidualView):  # a view built by hand may mean to differ from its model
            check_view(v, example_input)
    return v
