"""Models that declare their own view: a `respaths_view()` method (placeholder until the adapters issue)."""
from __future__ import annotations

from torch import nn

from ..core import ResidualView


def adapt(model: nn.Module, **_) -> ResidualView | None:
    fn = getattr(model, "respaths_view", None)
    return fn() if callable(fn) else None
