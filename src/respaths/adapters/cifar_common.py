"""Adapter for third-party CIFAR ResNets in the common layout, recognised with no code from the user.

The layout shared by kuangliu/pytorch-cifar, akamaster/pytorch_resnet_cifar10 and many copies:

    model.conv1, model.bn1, model.layer1 .. model.layerN (sequences of blocks), model.linear or model.fc
    block.conv1, block.bn1, block.conv2, block.bn2 (+ conv3, bn3 for a bottleneck),
    block.shortcut or block.downsample (a projection, an empty nn.Sequential, None, or an option-A
    zero-pad written as a LambdaLayer around a lambda)

and the forward they all write:

    out = relu(bn1(conv1(x)))                    # stem (+ maxpool when the model has one)
    out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))        # each block
    out = linear(flatten(avg_pool(out)))          # head

We cannot read a forward, so the view is built from the attributes and then checked: it must give
model(x) on the example input (or on a random 32x32 batch when none is given). Of the usual ways
to pool (the model's own pooling module, F.avg_pool2d over the whole map, adaptive average
pooling, a mean) the first that reproduces model(x) exactly becomes the head. A model that has
the layout but computes something else gets a clear error asking for a declaration.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Block, ResidualView, UserError, eval_mode, identity

DECLARE = "declare it with respaths.declare (docs/study-your-own-model.md, 'Bring your own model')"


def is_identity(m: Any) -> bool:
    return m is None or isinstance(m, nn.Identity) or (isinstance(m, nn.Sequential) and len(m) == 0)


def find_layers(model: nn.Module) -> list[nn.Module]:
    layers, k = [], 1
    while isinstance(getattr(model, f"layer{k}", None), (nn.Sequential, nn.ModuleList)):
        layers.append(getattr(model, f"layer{k}"))
        k += 1
    return layers


def is_block(b: nn.Module) -> bool:
    convs = all(isinstance(getattr(b, n, None), nn.Conv2d) for n in ("conv1", "conv2"))
    bns = all(isinstance(getattr(b, n, None), nn.Module) for n in ("bn1", "bn2"))
    return convs and bns and (hasattr(b, "shortcut") or hasattr(b, "downsample"))


def classifier(model: nn.Module) -> nn.Linear | None:
    for name in ("linear", "fc"):
        if isinstance(getattr(model, name, None), nn.Linear):
            return getattr(model, name)
    return None


def looks_like(model: nn.Module) -> bool:
    layers = find_layers(model)
    return (isinstance(getattr(model, "conv1", None), nn.Conv2d) and isinstance(getattr(model, "bn1", None), nn.Module)
            and bool(layers) and classifier(model) is not None
            and all(len(layer) > 0 and all(is_block(b) for b in layer) for layer in layers))


# ---------------------------------------------------------------------------------------------
# The pieces, as the common forward writes them

def stem(model: nn.Module, x: Tensor) -> Tensor:
    x = torch.relu(model.bn1(model.conv1(x)))
    maxpool = getattr(model, "maxpool", None)
    return maxpool(x) if isinstance(maxpool, nn.Module) else x


def branch(b: nn.Module, x: Tensor) -> Tensor:
    out = b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x)))))
    if isinstance(getattr(b, "conv3", None), nn.Conv2d):  # bottleneck
        out = b.bn3(b.conv3(torch.relu(out)))
    return out


def shortcut_of(b: nn.Module) -> Callable[[Tensor], Tensor]:
    sc = getattr(b, "shortcut", None) if hasattr(b, "shortcut") else getattr(b, "downsample", None)
    return identity if is_identity(sc) else sc


def changes_shape(b: nn.Module) -> bool:
    convs = [m for m in (b.conv1, b.conv2, getattr(b, "conv3", None)) if isinstance(m, nn.Conv2d)]
    strided = any(tuple(c.stride) != (1, 1) for c in convs)
    return strided or convs[0].in_channels != convs[-1].out_channels or shortcut_of(b) is not identity


def pool_whole_map(x: Tensor) -> Tensor:  # F.avg_pool2d(out, out.size(3)), or (out, 4) on a 4x4 map
    return F.avg_pool2d(x, x.size(3))


def pool_adaptive(x: Tensor) -> Tensor:
    return F.adaptive_avg_pool2d(x, 1)


def pool_mean(x: Tensor) -> Tensor:
    return x.mean((2, 3))


def head(pool: Callable, fc: nn.Linear, x: Tensor) -> Tensor:
    return fc(pool(x).flatten(1))


def pools(model: nn.Module) -> list[Callable]:
    own = [getattr(model, n) for n in ("avgpool", "avg_pool", "pool", "global_pool")
           if isinstance(getattr(model, n, None), nn.Module)]
    return own[:1] + [pool_whole_map, pool_adaptive, pool_mean]


# ---------------------------------------------------------------------------------------------
# Checking the guess against model(x)

def check_input(model: nn.Module, example_input: Any) -> Tensor:
    if isinstance(example_input, Tensor):
        return example_input
    p = next(model.parameters())
    g = torch.Generator().manual_seed(0)  # a private generator: the user's random state is untouched
    return torch.randn(2, model.conv1.in_channels, 32, 32, generator=g).to(p.device, p.dtype)


@torch.no_grad()
def outputs(model: nn.Module, features: Callable, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """model(x) and the view's features before the head, both in eval mode; (None, None) if the
    model does not run on x. Each module's training flag is restored afterwards."""
    with eval_mode(model):
        try:
            want = model(x)
        except Exception:  # e.g. a head that only fits another input size: nothing to check against
            return None, None
        return want, features(x)


def adapt(model: nn.Module, example_input: Any = None, **_) -> ResidualView | None:
    if not looks_like(model):
        return None
    blocks = []
    for s, layer in enumerate(find_layers(model)):
        for j, b in enumerate(layer):
            blocks.append(Block(branch=partial(branch, b), shortcut=shortcut_of(b), post=torch.relu,
                                name=f"layer{s + 1}.{j}", stage=s, downsample=changes_shape(b), module=b))
    fc = classifier(model)
    candidates = [partial(head, p, fc) for p in pools(model)]
    view = ResidualView(partial(stem, model), blocks, candidates[0], model=model,
                        name=type(model).__name__, adapter="cifar_common")

    def features(x: Tensor) -> Tensor:
        x = view.stem(x)
        for blk in view.blocks:
            x = blk(x)
        return x

    want, h = outputs(model, features, check_input(model, example_input))
    if want is None:
        return view
    for exact in (True, False):  # exact first; close enough only for nondeterministic kernels
        for c in candidates:
            try:
                got = c(h)
            except Exception:
                continue
            if got.shape == want.shape and (torch.equal(got, want) if exact else
                                            torch.allclose(got, want, rtol=1e-4, atol=1e-5)):
                view.head = c
                return view
    raise UserError(f"{type(model).__name__} has the layout of a CIFAR ResNet (conv1, bn1, layer1..N of "
                    f"blocks with conv1/bn1/conv2/bn2 and a shortcut, linear or fc) but its forward computes "
                    f"something else than relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); {DECLARE}.")
