"""Adapter for torchvision ResNet, ResNeXt and Wide ResNet (torchvision.models.resnet).

The blocks follow torchvision's own forward exactly:
  BasicBlock:  out = relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))
  Bottleneck:  out = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + downsample(x))
so branch is everything before the addition, shortcut is `downsample` (or the identity) and post is
the final ReLU. stem = conv1, bn1, relu, maxpool; head = avgpool, flatten, fc.
"""
from __future__ import annotations

import sys
from functools import partial

import torch
from torch import Tensor, nn

from ..core import ResidualView, UserError
from ..prune import fold_skipped
from .resnet_stages import stage_blocks


def basic_branch(block: nn.Module, x: Tensor) -> Tensor:
    return block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))


def bottleneck_branch(block: nn.Module, x: Tensor) -> Tensor:
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.relu(block.bn2(block.conv2(out)))
    return block.bn3(block.conv3(out))


def stem(model: nn.Module, x: Tensor) -> Tensor:
    return model.maxpool(model.relu(model.bn1(model.conv1(x))))


def head(model: nn.Module, x: Tensor) -> Tensor:
    return model.fc(torch.flatten(model.avgpool(x), 1))


def adapt(model: nn.Module, **_) -> ResidualView | None:
    if sys.modules.get("torchvision") is None:  # a torchvision model cannot exist without the import
        return None
    from torchvision.models import resnet as tv

    if not isinstance(model, tv.ResNet):
        return None
    cls = type(model)
    if cls.forward is not tv.ResNet.forward or cls._forward_impl is not tv.ResNet._forward_impl:
        raise UserError(f"{cls.__name__} is a torchvision ResNet with its own forward (quantized or "
                        f"modified), which respaths cannot see exactly; declare it with respaths.declare "
                        f"(docs/study-your-own-model.md, 'Bring your own model').")
    # post is the block's final ReLU, applied out of place: deleting an identity block
    # computes post(x), and an in-place ReLU would overwrite the caller's activation.
    kinds = {tv.BasicBlock: (basic_branch, lambda b: torch.relu), tv.Bottleneck: (bottleneck_branch, lambda b: torch.relu)}
    stem_fn, blocks = fold_skipped(partial(stem, model), stage_blocks(model, kinds, "torchvision ResNet",
                                                                      "a BasicBlock or Bottleneck"))
    return ResidualView(stem_fn, blocks, partial(head, model), model=model,
                        name=cls.__name__, adapter="torchvision")
