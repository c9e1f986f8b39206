"""Adapter for timm ResNets (timm.models.resnet), ResNetV2s (timm.models.resnetv2: BiT, resnetv2_50, ...)
and Vision Transformers (timm.models.vision_transformer).

Each view follows timm's own forward_features / forward_head step by step, so that it reproduces
model(x) exactly.

ResNet blocks (BasicBlock, Bottleneck, with timm's optional drop_block, anti-aliasing `aa`,
squeeze-excitation `se` and `drop_path`):
    out = act2(branch(x) + downsample(x))                  (act3 for a Bottleneck)
and the SK-ResNets' SelectiveKernelBasic / -Bottleneck (timm.models.sknet), out = act(branch(x) + downsample(x)).
stem = conv1, bn1, act1, maxpool; head = forward_head (global pool, dropout, fc).

ResNetV2 pre-activation blocks (PreActBasic, PreActBottleneck) normalise before the split:
    out = branch(x) + shortcut(x),   branch starts with norm1(x), shortcut(x) = downsample(norm1(x)) or x
so deleting a downsampling block leaves its projection of the pre-activated input. The
non-pre-activation Bottleneck (preact=False, as in the ViT hybrids) is out = act3(branch(x) + downsample(x)).
stem = model.stem; head = norm (identity without pre-activation), then forward_head.

ViT layers compute x = x + drop_path1(ls1(attn(norm1(x)))); x = x + drop_path2(ls2(mlp(norm2(x)))).
  split="layer" (default): a block is a whole layer, y = layer(x); deleting it leaves x.
  split="attn_mlp": attention and MLP are two blocks, each y = x + branch(x).
stem = patch_embed, pos embed (+ class/register tokens), patch_drop, norm_pre;
head = norm, then forward_head (pooling, fc_norm, head_drop, head).
"""
from __future__ import annotations

import sys
from functools import partial

from torch import Tensor, nn

from ..core import Block, ResidualView, UserError, identity
from ..prune import fold_skipped
from .declared import out_of_place
from .resnet_stages import DECLARE, stage_blocks


# ---------------------------------------------------------------------------------------------
# ResNet

def basic_branch(b: nn.Module, x: Tensor) -> Tensor:
    x = b.aa(b.act1(b.drop_block(b.bn1(b.conv1(x)))))
    x = b.bn2(b.conv2(x))
    if b.se is not None:
        x = b.se(x)
    return b.drop_path(x) if b.drop_path is not None else x


def bottleneck_branch(b: nn.Module, x: Tensor) -> Tensor:
    x = b.act1(b.bn1(b.conv1(x)))
    x = b.aa(b.act2(b.drop_block(b.bn2(b.conv2(x)))))
    x = b.bn3(b.conv3(x))
    if b.se is not None:
        x = b.se(x)
    return b.drop_path(x) if b.drop_path is not None else x


def sk_branch(b: nn.Module, x: Tensor) -> Tensor:
    # SelectiveKernelBasic / -Bottleneck (timm.models.sknet): conv1..conv3 carry their own norm and act
    for conv in ("conv1", "conv2", "conv3"):
        if hasattr(b, conv):
            x = getattr(b, conv)(x)
    if b.se is not None:
        x = b.se(x)
    return b.drop_path(x) if b.drop_path is not None else x


def resnet_stem(model: nn.Module, x: Tensor) -> Tensor:
    return model.maxpool(model.act1(model.bn1(model.conv1(x))))


def adapt_resnet(model: nn.Module, tr) -> ResidualView:
    from timm.models import sknet
    post = {name: (lambda b, act=name: out_of_place(getattr(b, act))) for name in ("act2", "act3", "act")}
    kinds = {tr.BasicBlock: (basic_branch, post["act2"]), tr.Bottleneck: (bottleneck_branch, post["act3"]),
             sknet.SelectiveKernelBasic: (sk_branch, post["act"]), sknet.SelectiveKernelBottleneck: (sk_branch, post["act"])}
    stem, blocks = fold_skipped(partial(resnet_stem, model), stage_blocks(
        model, kinds, "timm ResNet", "timm's BasicBlock, Bottleneck or SelectiveKernel block"))
    return ResidualView(stem, blocks, model.forward_head, model=model,
                        name=getattr(model, "default_cfg", {}).get("architecture", "") or type(model).__name__,
                        adapter="timm")


# ---------------------------------------------------------------------------------------------
# ResNetV2

def preact_basic_branch(b: nn.Module, x: Tensor) -> Tensor:
    x = b.conv1(b.norm1(x))
    return b.drop_path(b.conv2(b.norm2(x)))


def preact_bottleneck_branch(b: nn.Module, x: Tensor) -> Tensor:
    x = b.conv1(b.norm1(x))
    x = b.conv2(b.norm2(x))
    return b.drop_path(b.conv3(b.norm3(x)))


def preact_projection(b: nn.Module, x: Tensor) -> Tensor:
    # the block projects the normalised input, not x; norm1 runs again in the branch, as it is
    # deterministic the sum equals the block's own bit for bit
    return b.downsample(b.norm1(x))


def v2_bottleneck_branch(b: nn.Module, x: Tensor) -> Tensor:  # timm's norm layers carry the activation
    x = b.norm1(b.conv1(x))
    x = b.norm2(b.conv2(x))
    return b.drop_path(b.norm3(b.conv3(x)))


def adapt_resnetv2(model: nn.Module, rv2) -> ResidualView:
    preact = {rv2.PreActBasic: preact_basic_branch, rv2.PreActBottleneck: preact_bottleneck_branch}
    blocks = []
    for s, stage in enumerate(model.stages):
        if type(stage) is not rv2.ResNetStage:  # the view runs stage.blocks one by one, as its forward does
            raise UserError(f"stages.{s} of this timm ResNetV2 is a {type(stage).__name__}, not timm's "
                            f"ResNetStage; {DECLARE}.")
        for j, b in enumerate(stage.blocks):
            name = f"stages.{s}.blocks.{j}"
            kind = type(b)  # exact classes only: a subclass may compute something else
            if kind in preact:
                branch = preact[kind]
                shortcut = partial(preact_projection, b) if b.downsample is not None else identity
                post = identity
            elif kind is rv2.Bottleneck:
                branch = v2_bottleneck_branch
                shortcut = b.downsample if b.downsample is not None else identity
                post = out_of_place(b.act3)
            else:
                raise UserError(f"{name} of this timm ResNetV2 is a {kind.__name__}, not timm's PreActBasic, "
                                f"PreActBottleneck or Bottleneck; {DECLARE}.")
            blocks.append(Block(branch=partial(branch, b), shortcut=shortcut, post=post, name=name, stage=s,
                                downsample=b.downsample is not None, module=b))
    return ResidualView(model.stem, blocks, partial(norm_then_head, model), model=model,
                        name=getattr(model, "default_cfg", {}).get("architecture", "") or type(model).__name__,
                        adapter="timm")


def norm_then_head(model: nn.Module, x: Tensor) -> Tensor:  # the end of forward_features, then forward_head
    return model.forward_head(model.norm(x))


# ---------------------------------------------------------------------------------------------
# Vision Transformer

def layer_residual(layer: nn.Module, x: Tensor) -> Tensor:
    return layer(x) - x


def attn_branch(b: nn.Module, x: Tensor) -> Tensor:
    return b.drop_path1(b.ls1(b.attn(b.norm1(x))))


def mlp_branch(b: nn.Module, x: Tensor) -> Tensor:
    return b.drop_path2(b.ls2(b.mlp(b.norm2(x))))


def res_post_attn_branch(b: nn.Module, x: Tensor) -> Tensor:  # ResPostBlock: norm on the branch output
    return b.drop_path1(b.norm1(b.attn(x)))


def res_post_mlp_branch(b: nn.Module, x: Tensor) -> Tensor:
    return b.drop_path2(b.norm2(b.mlp(x)))


def vit_stem(model: nn.Module, x: Tensor) -> Tensor:
    return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))


def adapt_vit(model: nn.Module, vt, split: str) -> ResidualView:
    if split not in ("layer", "attn_mlp"):
        raise UserError(f"split={split!r} is not a way to cut a ViT into blocks; use 'layer' (one block "
                        f"per layer) or 'attn_mlp' (attention and MLP as two blocks).")
    halves = {vt.Block: (attn_branch, mlp_branch), vt.ResPostBlock: (res_post_attn_branch, res_post_mlp_branch)}
    blocks: list[Block] = []
    for j, layer in enumerate(model.blocks):
        name = f"blocks.{j}"
        if split == "layer":
            # the layer computes (x + a) + m, which the triple x + (a + m) equals only up to rounding:
            # running the block calls the layer itself; branch (layer(x) - x) is for path analyses
            blocks.append(Block(branch=partial(layer_residual, layer), forward=layer, name=name, module=layer))
            continue
        kind = type(layer)
        if kind not in halves:  # exact classes only: a subclass may compute something else
            raise UserError(f"{name} of this ViT is a {kind.__name__}, which respaths cannot split into "
                            f"attention and MLP; use split='layer' or {DECLARE}.")
        attn, mlp = halves[kind]
        blocks.append(Block(branch=partial(attn, layer), name=f"{name}.attn", module=layer))
        blocks.append(Block(branch=partial(mlp, layer), name=f"{name}.mlp", module=layer))
    return ResidualView(partial(vit_stem, model), blocks, partial(norm_then_head, model), model=model,
                        name=getattr(model, "default_cfg", {}).get("architecture", "") or type(model).__name__,
                        adapter="timm")


# ---------------------------------------------------------------------------------------------

def adapt(model: nn.Module, split: str = "layer", **_) -> ResidualView | None:
    if sys.modules.get("timm") is None:  # a timm model cannot exist without the import
        return None
    from timm.models import resnet as tr
    from timm.models import resnetv2 as rv2
    from timm.models import vision_transformer as vt

    cls = type(model)
    if isinstance(model, tr.ResNet):
        base = tr.ResNet
        view = partial(adapt_resnet, model, tr)
    elif isinstance(model, rv2.ResNetV2):
        base = rv2.ResNetV2
        view = partial(adapt_resnetv2, model, rv2)
    elif isinstance(model, vt.VisionTransformer):
        base = vt.VisionTransformer
        view = partial(adapt_vit, model, vt, split)
    else:
        return None
    if cls.forward is not base.forward or cls.forward_features is not base.forward_features:
        raise UserError(f"{cls.__name__} is a timm {base.__name__} with its own forward, which respaths "
                        f"cannot see exactly; {DECLARE}.")
    return view()
