"""Adapter for respaths' own models (respaths.models.Net): they are already stem -> blocks -> head."""
from __future__ import annotations

from torch import nn

from ..core import Block, ResidualView
from ..models import Net, ResidualBlock
from ..prune import Skipped, fold_skipped


def adapt(model: nn.Module, **_) -> ResidualView | None:
    if not isinstance(model, Net):
        return None
    blocks: list = []
    for i, b in enumerate(model.blocks):
        if isinstance(b, Skipped):  # a pruned model's removed downsampling block: folded in below
            blocks.append(b)
            continue
        branch = b.scaled_branch if isinstance(b, ResidualBlock) else b.branch
        blocks.append(Block(branch=branch, shortcut=b.shortcut, post=b.post, name=f"blocks.{i}",
                            stage=b.stage, downsample=b.downsample, module=b))
    stem, blocks = fold_skipped(model.stem, blocks)
    return ResidualView(stem, blocks, model.head, model=model,
                        name=model.config.get("name", "respaths"), adapter="respaths")
