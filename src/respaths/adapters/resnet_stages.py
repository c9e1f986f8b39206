"""The blocks of a ResNet laid out as torchvision's and timm's are: stages layer1..layer4, each a
Sequential of blocks whose forward is post(branch(x) + downsample(x)), downsample None for the identity."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

from torch import nn

from ..core import Block, UserError, identity
from ..prune import Skipped

DECLARE = "declare the model with respaths.declare (docs/study-your-own-model.md, 'Bring your own model')"
STAGES = ("layer1", "layer2", "layer3", "layer4")


def stage_blocks(model: nn.Module, kinds: dict[type, tuple[Callable, Callable[[nn.Module], Any]]],
                 what: str, expected: str) -> list[Block | Skipped]:
    """One Block per block of layer1..layer4, and a pruned model's Skipped modules as they are (for
    prune.fold_skipped). kinds: block class -> (branch(block, x), post_of(block)); another class is a
    UserError naming the block, what model it is in and the classes expected."""
    blocks: list[Block | Skipped] = []
    for s, layer_name in enumerate(STAGES):
        for j, b in enumerate(getattr(model, layer_name)):
            if isinstance(b, Skipped):
                blocks.append(b)
                continue
            if type(b) not in kinds:
                raise UserError(f"{layer_name}.{j} of this {what} is a {type(b).__name__}, not {expected}; {DECLARE}.")
            branch, post_of = kinds[type(b)]
            blocks.append(Block(branch=partial(branch, b),
                                shortcut=b.downsample if b.downsample is not None else identity,
                                post=post_of(b), name=f"{layer_name}.{j}", stage=s,
                                downsample=b.downsample is not None, module=b))
    return blocks
