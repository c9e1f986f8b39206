"""The paper's models, in one registry by name.

  resnet{6n+2}     He et al. 2016, CIFAR ResNet, post-activation (post = ReLU), shortcut A or B
  preresnet{6n+2}  He et al. 2016b, pre-activation ResNet (post = identity): the paper's model
  plain{6n+2}      the ResNet with its shortcuts removed
  vgg15, vgg15-nobn  the paper's plain baseline: 13 conv layers + 2 fully connected

Every model is stem -> blocks -> head, and every block module has `branch`, `shortcut` and `post`
children, so that the residual view (respaths.core) needs no guessing. Residual blocks also carry
the state for stochastic depth (Huang et al. 2016) and fixed-m training (Veit et al. 2016, sec. 5):
the trainer draws which blocks are active for each mini-batch and calls `set_active`.
"""
from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from .core import UserError


class ZeroPadShortcut(nn.Module):
    """Option A of He et al.: subsample by the stride, zero-pad the new channels (no parameters)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, front: int = 0):
        super().__init__()
        self.stride, self.pad = stride, out_ch - in_ch
        # zero channels put before the input's: 0 here; pad // 2 in akamaster's published ResNets
        # (F.pad(x, (0, 0, 0, 0, planes // 4, planes // 4))), set by loading.map_akamaster
        self.front = front

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.front, self.pad - self.front)) if self.pad else x


def projection(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """Option B of He et al.: 1x1 convolution + BN."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)


class ResidualBlock(nn.Module):
    """y = post(shortcut(x) + scale * branch(x)).

    scale is 1 except at test time in a stochastic-depth or fixed-m net, where the branch is scaled
    by its survival probability (Huang et al.). During training a block that was drawn inactive
    for this mini-batch computes post(shortcut(x)) only.
    """

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None, post: nn.Module,
                 downsample: bool, stage: int):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut  # None: a plain block (no skip)
        self.post = post
        self.downsample = downsample
        self.stage = stage
        self.survival = 1.0  # probability of being active in training (test-time scale)
        self.active = True  # drawn per mini-batch by the trainer

    def scaled_branch(self, x: Tensor) -> Tensor:
        b = self.branch(x)
        if not self.training and self.survival != 1.0:
            b = b * self.survival
        return b

    def forward(self, x: Tensor) -> Tensor:
        if self.shortcut is None:
            return self.post(self.branch(x))
        if self.training and not self.active:
            return self.post(self.shortcut(x))
        return self.post(self.shortcut(x) + self.scaled_branch(x))


class Layer(nn.Module):
    """A plain VGG layer: conv (+ BN) + ReLU, optionally preceded by 2x2 max-pooling."""

    def __init__(self, in_ch: int, out_ch: int, bn: bool, pool: bool, stage: int):
        super().__init__()
        mods: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
        mods += [nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=not bn)]
        mods += [nn.BatchNorm2d(out_ch)] if bn else []
        mods += [nn.ReLU(inplace=False)]
        self.branch = nn.Sequential(*mods)
        self.shortcut = None
        self.post = nn.Identity()
        self.downsample = pool or in_ch != out_ch
        self.stage = stage

    def forward(self, x: Tensor) -> Tensor:
        return self.branch(x)


class Net(nn.Module):
    """stem -> blocks -> head, with the model's configuration kept for checkpoints."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, config: dict[str, Any]):
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.config = config

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x)

    # -- stochastic depth and fixed-m training -------------------------------------------------
    @property
    def residual_blocks(self) -> list[ResidualBlock]:
        return [b for b in self.blocks if isinstance(b, ResidualBlock) and b.shortcut is not None]

    def draw_active(self, generator: torch.Generator) -> Tensor | None:
        """Which residual blocks are active for the next mini-batch, or None when all always are."""
        n = len(self.residual_blocks)
        m = self.config.get("fixed_m")
        if m:
            active = torch.zeros(n, dtype=torch.bool)
            active[torch.randperm(n, generator=generator)[:m]] = True
            return active
        if self.config.get("stochastic_depth") is not None:
            p = torch.tensor([b.survival for b in self.residual_blocks])
            return torch.rand(n, generator=generator) < p
        return None

    def set_active(self, active: Tensor | None) -> None:
        for i, b in enumerate(self.residual_blocks):
            b.active = True if active is None else bool(active[i])


def _stages(depth: int) -> int:
    if depth < 8 or (depth - 2) % 6:
        raise UserError(f"depth {depth} is not of the form 6n+2 (8, 14, 20, 32, 44, 56, 110, ...); "
                         f"pick one of those.")
    return (depth - 2) // 6


def _set_survival(net: Net, stochastic_depth: float | None, fixed_m: int | None) -> Net:
    blocks = net.residual_blocks
    L = len(blocks)
    if fixed_m is not None:
        if not 1 <= fixed_m <= L:
            raise UserError(f"fixed_m={fixed_m} must be between 1 and the number of blocks, {L}.")
        for b in blocks:
            b.survival = fixed_m / L
    elif stochastic_depth is not None:
        if not 0.0 < stochastic_depth <= 1.0:
            raise UserError(f"stochastic depth p_L={stochastic_depth} must be in (0, 1].")
        for l, b in enumerate(blocks, start=1):  # linear decay rule: p_l = 1 - l/L (1 - p_L)
            b.survival = 1.0 - l / L * (1.0 - stochastic_depth)
    return net


def cifar_resnet(depth: int, in_channels: int = 3, num_classes: int = 10, width: float = 1.0,
                 preact: bool = False, shortcut: str = "A", plain: bool = False,
                 stochastic_depth: float | None = None, fixed_m: int | None = None, zero_pad: str = "after") -> Net:
    """He et al. CIFAR ResNet with 3 stages of n blocks (depth = 6n + 2) and widths 16, 32, 64.

    zero_pad (option A): the new zero channels go "after" the input's, or half on "both" sides as in
    akamaster's published CIFAR ResNets."""
    n = _stages(depth)
    if shortcut not in ("A", "B"):
        raise UserError(f"shortcut must be 'A' (zero-pad) or 'B' (projection), not {shortcut!r}.")
    if zero_pad not in ("after", "both"):
        raise UserError(f"zero_pad must be 'after' or 'both', not {zero_pad!r}.")
    widths = [max(1, round(w * width)) for w in (16, 32, 64)]
    # He et al. 2016b, appendix: the first unit's activation comes right after conv1, before the split
    # into two paths, so the stem is conv-BN-ReLU in both designs and block 0's branch starts with conv.
    stem: list[nn.Module] = [conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    blocks: list[nn.Module] = []
    in_ch = widths[0]
    for s, w in enumerate(widths):
        for j in range(n):
            stride = 2 if (s > 0 and j == 0) else 1
            if preact:
                pre = [nn.BatchNorm2d(in_ch), nn.ReLU()] if blocks else []
                branch = nn.Sequential(*pre, conv3x3(in_ch, w, stride),
                                       nn.BatchNorm2d(w), nn.ReLU(), conv3x3(w, w))
                post: nn.Module = nn.Identity()
            else:
                branch = nn.Sequential(conv3x3(in_ch, w, stride), nn.BatchNorm2d(w), nn.ReLU(),
                                       conv3x3(w, w), nn.BatchNorm2d(w))
                post = nn.ReLU()
            down = stride != 1 or in_ch != w
            if plain:
                sc = None
            elif not down:
                sc = nn.Identity()
            else:
                sc = (ZeroPadShortcut(in_ch, w, stride, front=(w - in_ch) // 2 if zero_pad == "both" else 0)
                      if shortcut == "A" else projection(in_ch, w, stride))
            blocks.append(ResidualBlock(branch, sc, post, down, s))
            in_ch = w
    head: list[nn.Module] = [nn.BatchNorm2d(in_ch), nn.ReLU()] if preact else []
    head += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)]
    config = dict(depth=depth, in_channels=in_channels, num_classes=num_classes, width=width,
                  shortcut=shortcut, stochastic_depth=stochastic_depth, fixed_m=fixed_m)
    if zero_pad != "after":  # recorded only when set, so that older checkpoints' configs stay the same
        config["zero_pad"] = zero_pad
    net = Net(nn.Sequential(*stem), blocks, nn.Sequential(*head), config)
    _init(net)
    return _set_survival(net, stochastic_depth, fixed_m)


def vgg15(in_channels: int = 3, num_classes: int = 10, width: float = 1.0, bn: bool = True) -> Net:
    """The paper's 15-layer plain baseline: a stem conv, 12 conv layers in 3 stages of 4 (equal width
    within a stage, so any layer but a stage's first can be skipped), and 2 fully connected layers."""
    widths = [max(1, round(w * width)) for w in (64, 128, 256)]
    stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=not bn),
                         *( [nn.BatchNorm2d(widths[0])] if bn else []), nn.ReLU())
    blocks: list[nn.Module] = []
    in_ch = widths[0]
    for s, w in enumerate(widths):
        for j in range(4):
            blocks.append(Layer(in_ch, w, bn, pool=(s > 0 and j == 0), stage=s))
            in_ch = w
    hidden = max(16, round(512 * width))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))
    config = dict(depth=15, in_channels=in_channels, num_classes=num_classes, width=width, bn=bn)
    net = Net(stem, blocks, head, config)
    _init(net)
    return net


def _init(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# The registry

NAME = re.compile(r"(resnet|preresnet|plain)(\d+)|vgg15(-nobn)?")


def parse_name(name: str) -> tuple[str, int] | None:
    """(family, depth) of a model name: ("resnet", 20), ("vgg15", 15), ("vgg15-nobn", 15); None when
    the name is none of list_models()."""
    m = NAME.fullmatch(name)
    if not m:
        return None
    return (m.group(1), int(m.group(2))) if m.group(1) else (name, 15)


def blocks_of(name: str) -> int:
    """The number of residual blocks of a resnet{6n+2} / preresnet{6n+2} / plain{6n+2} model: 3n."""
    parsed = parse_name(name)
    if parsed is None or parsed[0].startswith("vgg"):
        raise UserError(f"{name!r} is not a resnet, preresnet or plain model of depth 6n+2.")
    return 3 * _stages(parsed[1])


def list_models() -> list[str]:
    return ["resnet{6n+2}", "preresnet{6n+2}", "plain{6n+2}", "vgg15", "vgg15-nobn"]


def build_model(name: str, in_channels: int = 3, num_classes: int = 10, width: float = 1.0,
                shortcut: str = "A", stochastic_depth: float | None = None,
                fixed_m: int | None = None, zero_pad: str = "after") -> Net:
    """Build a model by name; the dataset decides in_channels and num_classes."""
    if width <= 0:
        raise UserError(f"width multiplier must be positive, not {width}.")
    parsed = parse_name(name)
    if parsed is None:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(list_models())}.")
    family, depth = parsed
    if family.startswith("vgg"):
        if stochastic_depth is not None or fixed_m is not None:
            raise UserError("stochastic depth and fixed-m training need a residual model, not a VGG.")
        net = vgg15(in_channels, num_classes, width, bn=(name == "vgg15"))
    else:
        if family == "plain" and (stochastic_depth is not None or fixed_m is not None):
            raise UserError("stochastic depth and fixed-m training need shortcuts; plain nets have none.")
        net = cifar_resnet(depth, in_channels, num_classes, width, preact=(family == "preresnet"),
                           shortcut=shortcut, plain=(family == "plain"),
                           stochastic_depth=stochastic_depth, fixed_m=fixed_m, zero_pad=zero_pad)
    net.config["name"] = name
    return net


# the config keys that are build_model's options (the rest, depth and name, are in the name)
BUILD_OPTIONS = ("in_channels", "num_classes", "width", "shortcut", "stochastic_depth", "fixed_m", "zero_pad")


def build_from_config(config: dict[str, Any], name: str | None = None) -> Net:
    """The model a Net's config describes (as checkpoints and pruned exports record it), freshly
    initialised; name overrides config["name"]."""
    return build_model(name or config["name"], **{k: config[k] for k in BUILD_OPTIONS if k in config})
