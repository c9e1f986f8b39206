"""Every adapter's view reproduces model(x) exactly, and deleting a block in the view equals really
replacing that block in a copy of the model. Small models, random weights, nothing downloaded."""
from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import respaths
from respaths.core import UserError, delete_blocks



from tests.helpers import needs_timm, needs_torchvision, one_sentence, randomize_bn, timm, torchvision, tvr  # noqa: E402


class Fn(nn.Module):
    """A module that computes fn(x): the stand-in for a deleted block in a copy of a model."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, **_):  # **_: a ViT passes attn_mask to its attention
        return self.fn(x)


# ---------------------------------------------------------------------------------------------
# Third-party CIFAR ResNets, written as in their repositories

class LambdaLayer(nn.Module):  # akamaster/pytorch_resnet_cifar10
    def __init__(self, lambd):
        super(LambdaLayer, self).__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class AkaBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, option='A'):
        super(AkaBasicBlock, self).__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if option == 'A':
                self.shortcut = LambdaLayer(lambda x:
                                            F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4), "constant", 0))
            elif option == 'B':
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class AkaResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super(AkaResNet, self).__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(block, 16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 64, num_blocks[2], stride=2)
        self.linear = nn.Linear(64, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1]*(num_blocks-1)
        layers = []
        for stride in strides:
            layers.append(block(self.in_planes, planes, stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        out = self.linear(out)
        return out


class AkaBasicBlockB(AkaBasicBlock):  # option B: projection shortcuts
    def __init__(self, in_planes, planes, stride=1):
        super().__init__(in_planes, planes, stride, option='B')


class KLBasicBlock(nn.Module):  # kuangliu/pytorch-cifar
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super(KLBasicBlock, self).__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion*planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion*planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion*planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class KLBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super(KLBottleneck, self).__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion*planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion*planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion*planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion*planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion*planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class KLResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super(KLResNet, self).__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512*block.expansion, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1]*(num_blocks-1)
        layers = []
        for stride in strides:
            layers.append(block(self.in_planes, planes, stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        out = self.linear(out)
        return out


# ---------------------------------------------------------------------------------------------
# A model of our own kind for the declaration: post-LN residual MLP blocks over tokens

class PostLNBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.post = nn.LayerNorm(d)

    def forward(self, x):
        return self.post(x + self.branch(x))


class TokenNet(nn.Module):
    def __init__(self, d=16, depth=4, classes=5):
        super().__init__()
        self.embed = nn.Linear(8, d)
        self.layers = nn.ModuleList(PostLNBlock(d) for _ in range(depth))
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, classes)

    def forward(self, x):
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.fc(self.norm(x).mean(1))


def declare_tokennet(m):
    return respaths.declare(m, stem="embed", blocks="layers.*", head=["norm", lambda h: h.mean(1), "fc"])


# ---------------------------------------------------------------------------------------------
# The cases: (builder, input shape, expected adapter, number of blocks, deletions to check, replacer)
# A replacer builds, in a copy of the model, the module that stands where block i was.

def tv_delete(copy_model, name):
    b = copy_model.get_submodule(name)
    return Fn(lambda x: torch.relu(b.downsample(x) if b.downsample is not None else x))


def timm_res_delete(copy_model, name):
    b = copy_model.get_submodule(name)
    act = b.act3 if hasattr(b, "act3") else b.act2 if hasattr(b, "act2") else b.act  # act: SK blocks
    return Fn(lambda x: act(b.downsample(x) if b.downsample is not None else x))


def timm_preact_delete(copy_model, name):
    """A pre-activation ResNetV2 block replaced by its shortcut: the projection of norm1(x), or x."""
    b = copy_model.get_submodule(name)
    return Fn(lambda x: b.downsample(b.norm1(x)) if b.downsample is not None else x)


def cifar_delete(copy_model, name):
    b = copy_model.get_submodule(name)
    return Fn(lambda x: F.relu(b.shortcut(x)))


def postln_delete(copy_model, name):
    b = copy_model.get_submodule(name)
    return Fn(lambda x: b.post(x))


def tv(name, **kw):
    return lambda: torchvision.models.get_model(name, weights=None, num_classes=10, **kw)


def tm(name, **kw):
    return lambda: timm.create_model(name, pretrained=False, num_classes=10, **kw)


def resnetv2(**kw):
    """A small timm ResNetV2 (one or two blocks a stage); widths keep GroupNorm's 32 groups whole."""
    from timm.models.resnetv2 import ResNetV2
    return lambda: ResNetV2(layers=[1, 2, 1, 1], channels=(128, 256, 512, 1024), stem_chs=32, num_classes=10, **kw)


def bit_resnetv2():  # BiT's settings (resnetv2_50x1_bit): 'fixed' padded stem, StdConv2d with eps 1e-8
    from timm.layers import StdConv2d
    return resnetv2(stem_type="fixed", conv_layer=partial(StdConv2d, eps=1e-8))()


def hybrid_resnetv2():  # the ViT hybrids' backbone: non-pre-activation Bottleneck, 'same' padding
    from timm.layers import StdConv2dSame
    return resnetv2(preact=False, stem_type="same", conv_layer=StdConv2dSame)()


CASES = {
    "tv-resnet18": (tv("resnet18"), (2, 3, 32, 32), "torchvision", 8, ["layer1.1", "layer3.0"], tv_delete),
    "tv-resnet50": (tv("resnet50"), (1, 3, 32, 32), "torchvision", 16, ["layer1.0", "layer3.4"], tv_delete),
    # ResNeXt (grouped 3x3) and Wide ResNet (wider 3x3) are the same classes with other widths: one block a stage
    "tv-resnext": (lambda: tvr.ResNet(tvr.Bottleneck, [1, 1, 2, 1], groups=32, width_per_group=4, num_classes=10),
                   (1, 3, 32, 32), "torchvision", 5, ["layer4.0", "layer3.1"], tv_delete),
    "tv-wide": (lambda: tvr.ResNet(tvr.Bottleneck, [1, 2, 1, 1], width_per_group=128, num_classes=10),
                (1, 3, 32, 32), "torchvision", 5, ["layer2.1"], tv_delete),
    "timm-resnet18": (tm("resnet18"), (2, 3, 64, 64), "timm", 8, ["layer2.0", "layer2.1"], timm_res_delete),
    "timm-resnet26": (tm("resnet26"), (2, 3, 64, 64), "timm", 8, ["layer1.0", "layer4.1"], timm_res_delete),
    "timm-seresnext26d": (tm("seresnext26d_32x4d", drop_path_rate=0.1), (2, 3, 64, 64), "timm", 8,
                          ["layer3.0", "layer3.1"], timm_res_delete),
    "timm-resnetblur18": (tm("resnetblur18"), (2, 3, 64, 64), "timm", 8, ["layer2.0"], timm_res_delete),
    "timm-skresnet18": (tm("skresnet18"), (2, 3, 64, 64), "timm", 8, ["layer2.0", "layer3.1"], timm_res_delete),
    "timm-skresnet50": (tm("skresnet50", layers=[1, 2, 1, 1], drop_path_rate=0.1), (1, 3, 64, 64), "timm", 5,
                        ["layer2.1", "layer4.0"], timm_res_delete),
    "timm-resnetv2_18": (tm("resnetv2_18"), (2, 3, 64, 64), "timm", 8, ["stages.0.blocks.1", "stages.2.blocks.0"],
                         timm_preact_delete),
    "timm-resnetv2_50": (tm("resnetv2_50", layers=[1, 2, 1, 1], drop_path_rate=0.1), (1, 3, 64, 64), "timm", 5,
                         ["stages.1.blocks.1", "stages.0.blocks.0"], timm_preact_delete),
    "timm-resnetv2-bit": (bit_resnetv2, (2, 3, 64, 64), "timm", 5, ["stages.1.blocks.1", "stages.3.blocks.0"],
                          timm_preact_delete),
    "timm-resnetv2-hybrid": (hybrid_resnetv2, (2, 3, 64, 64), "timm", 5, ["stages.1.blocks.1", "stages.1.blocks.0"],
                             timm_res_delete),
    "akamaster-resnet20-A": (lambda: AkaResNet(AkaBasicBlock, [3, 3, 3]), (2, 3, 32, 32), "cifar_common", 9,
                             ["layer1.1", "layer2.0"], cifar_delete),
    "akamaster-resnet14-B": (lambda: AkaResNet(AkaBasicBlockB, [2, 2, 2]), (2, 3, 32, 32),
                             "cifar_common", 6, ["layer3.0"], cifar_delete),
    "kuangliu-resnet18": (lambda: KLResNet(KLBasicBlock, [2, 2, 2, 2]), (1, 3, 32, 32), "cifar_common", 8,
                          ["layer2.0", "layer4.1"], cifar_delete),
    "kuangliu-bottleneck": (lambda: KLResNet(KLBottleneck, [1, 1, 2, 1]), (2, 3, 32, 32), "cifar_common", 5,
                            ["layer1.0", "layer3.1"], cifar_delete),
    "declared-postln": (lambda: TokenNet(), (3, 6, 8), "declared", 4, ["layers.1"], postln_delete),
}


def build_case(key):
    torch.manual_seed(0)
    builder, shape, adapter, n, deletions, replacer = CASES[key]
    model = randomize_bn(builder()).eval()
    if key.startswith("declared"):
        declare_tokennet(model)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    return model, x, adapter, n, deletions, replacer


@pytest.mark.parametrize("key", list(CASES))
@torch.no_grad()
def test_view_is_exact_and_deletion_equals_replacement(key):
    family = CASES[key][2]
    if (family == "torchvision" and torchvision is None) or (family == "timm" and timm is None):
        pytest.skip(f"{family} is not installed")
    model, x, adapter, n, deletions, replacer = build_case(key)
    v = respaths.view(model, x)
    assert v.adapter == adapter and len(v) == n
    want = model(x)
    assert torch.equal(v(x), want)
    names = [b.name for b in v.blocks]
    assert all(b.module is model.get_submodule(b.name) for b in v.blocks)
    for name in deletions:
        i = names.index(name)
        twin = copy.deepcopy(model)
        parent, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent), child, replacer(twin, name))
        got = v(x, delete_blocks(n, [i]))
        assert torch.equal(got, twin(x)), f"deleting {name}"
        assert not torch.equal(got, want)  # the deletion did something
    # the adapter itself (before any probing) flags every block that changes the shape
    unprobed = respaths.view(model)
    assert all(u.downsample for u, b in zip(unprobed.blocks, v.blocks) if b.in_shape != b.out_shape)


@torch.no_grad()
@needs_torchvision
def test_block_structure_torchvision_and_cifar():
    model, x, *_ = build_case("tv-resnet50")
    v = respaths.view(model, x)
    assert [b.stage for b in v.blocks] == [0] * 3 + [1] * 4 + [2] * 6 + [3] * 3
    assert [b.name for b in v.blocks if b.downsample] == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    h = v.stem(x)
    assert torch.equal(v.blocks[0](h), model.layer1[0](h))
    assert torch.equal(h, model.maxpool(model.relu(model.bn1(model.conv1(x)))))
    keep = h.clone()
    v.blocks[1].deleted(h)  # post is applied out of place: the input is left as it was
    assert torch.equal(h, keep)
    model, x, *_ = build_case("akamaster-resnet20-A")
    v = respaths.view(model, x)
    assert [b.downsample for b in v.blocks] == [False] * 3 + [True, False, False] * 2
    assert v.blocks[3].in_shape == (16, 32, 32) and v.blocks[3].out_shape == (32, 16, 16)


@torch.no_grad()
@needs_timm
def test_timm_vit_layers_and_halves():
    torch.manual_seed(0)
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    want = model(x)
    whole = respaths.view(model, x)
    assert len(whole) == 3 and torch.equal(whole(x), want)
    halves = respaths.view(model, x, split="attn_mlp")
    assert [b.name for b in halves.blocks][:2] == ["blocks.0.attn", "blocks.0.mlp"]
    assert len(halves) == 6 and torch.equal(halves(x), want)
    assert all(b.in_shape == (17, 32) and not b.downsample for b in halves.blocks)
    # deleting layer 1 is the model with that layer replaced by the identity
    twin = copy.deepcopy(model)
    twin.blocks[1] = nn.Identity()
    assert torch.equal(whole(x, delete_blocks(3, [1])), twin(x))
    # deleting the attention of layer 2 is the model whose attention there outputs nothing
    twin = copy.deepcopy(model)
    twin.blocks[2].attn = Fn(torch.zeros_like)
    assert torch.equal(halves(x, delete_blocks(6, [4])), twin(x))
    # the named timm model, at a small image size
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(respaths.view(vit, x, split="attn_mlp")(x), vit(x))
    with pytest.raises(UserError, match="split"):
        respaths.view(vit, split="heads")


@torch.no_grad()
@torch.no_grad()
@needs_timm
def test_timm_resnetv2_blocks_and_lesions():
    from respaths.engine import evaluate_plans
    from respaths.experiments.lesion import lesioned_model
    model, x, *_ = build_case("timm-resnetv2_18")  # PreActBasic: a projection only where the shape changes
    v = respaths.view(model, x)
    assert [b.stage for b in v.blocks] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [b.name for b in v.blocks if b.downsample] == [f"stages.{s}.blocks.0" for s in (1, 2, 3)]
    assert torch.equal(v.stem(x), model.stem(x))
    for key in ["timm-resnetv2-bit", "timm-resnetv2-hybrid"]:  # a Bottleneck always projects in a stage's first block
        model, x, *_ = build_case(key)
        v = respaths.view(model, x)
        assert [b.stage for b in v.blocks] == [0, 1, 1, 2, 3]
        assert [b.downsample for b in v.blocks] == [True, True, False, True, True]
        assert v.blocks[2].in_shape == v.blocks[2].out_shape == (256, 8, 8)
        # deleting the non-downsampling block through the lesion helpers is the model with that block's
        # forward replaced by its shortcut (x, then act3 for the non-pre-activation Bottleneck)
        y = torch.tensor([1, 2])
        plans = [respaths.full_plan(5), delete_blocks(5, [2])]
        results = evaluate_plans(v, (x, y), plans, batch_size=2, keep_logits=True)
        assert torch.equal(results[0].examples["logits"], model(x))
        twin = copy.deepcopy(model)
        block = twin.stages[1].blocks[1]
        block.forward = (lambda x: block.act3(x)) if key.endswith("hybrid") else (lambda x: x)
        naive = twin(x)
        assert torch.equal(results[1].examples["logits"], naive) and not torch.equal(naive, results[0].examples["logits"])
        assert torch.equal(lesioned_model(model, plans[1], x).eval()(x), naive)


@needs_timm
def test_timm_resnetv2_with_its_own_forward_is_refused():
    from timm.models.resnetv2 import ResNetV2

    class Tapped(ResNetV2):
        def forward_features(self, x):
            return super().forward_features(x) * 2

    with pytest.raises(UserError, match="own forward"):
        respaths.view(Tapped(layers=[1, 1, 1, 1], channels=(128, 256, 512, 1024), stem_chs=32, num_classes=10))


@needs_torchvision
def test_declaration_forms():
    torch.manual_seed(0)
    m = TokenNet().eval()
    x = torch.randn(2, 6, 8)
    v = declare_tokennet(m)
    assert v.adapter == "declared" and [b.name for b in v.blocks] == [f"layers.{i}" for i in range(4)]
    assert respaths.view(m).adapter == "declared"  # the declaration stays with the model...
    twin = copy.deepcopy(m)
    assert respaths.view(twin).blocks[0].module is twin.layers[0]  # ...and resolves in a copy
    # explicit triples; the last layer declared as a plain layer (no skip) with the same output
    triples = [(f"layers.{i}.branch", nn.Identity(), f"layers.{i}.post") for i in range(4)]
    t = respaths.declare(copy.deepcopy(m), stem=m.embed, blocks=triples, head=lambda h: m.fc(m.norm(h).mean(1)))
    assert torch.equal(t(x), m(x)) and all(b.residual and not b.downsample for b in t.blocks)
    # a torchvision ResNet declared by hand: submodule lists for the branch, a shared post
    r = randomize_bn(torchvision.models.resnet18(weights=None, num_classes=10))
    xr = torch.randn(2, 3, 64, 64)
    d = respaths.declare(r, stem=["conv1", "bn1", "relu", "maxpool"], blocks="layer*.*",
                         head=["avgpool", partial(torch.flatten, start_dim=1), "fc"],
                         branch=["conv1", "bn1", "relu", "conv2", "bn2"], shortcut="downsample", post=torch.relu,
                         example_input=xr)
    assert d.adapter == "declared" and len(d) == 8 and torch.equal(d(xr), r(xr))
    assert [b.stage for b in d.blocks] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [b.downsample for b in d.blocks] == [False, False, True, False, True, False, True, False]
    # the respaths_view() hook
    class Hooked(TokenNet):
        def respaths_view(self):
            return dict(stem="embed", blocks=[f"layers.{i}" for i in range(4)], head=["norm", lambda h: h.mean(1), "fc"])
    h = Hooked().eval()
    assert torch.equal(respaths.view(h, x)(x), h(x))
    # mistakes are one sentence each
    with pytest.raises(UserError, match="matches no module"):
        respaths.declare(TokenNet(), stem="embed", blocks="blocks.*", head="fc")
    with pytest.raises(UserError, match="no such module"):
        respaths.declare(TokenNet(), stem="embedding", blocks="layers.*", head="fc")
    with pytest.raises(UserError, match="has no attribute 'act'"):
        respaths.declare(TokenNet(), stem="embed", blocks="layers.*", head="fc", post="act")


class PreNormBlock(nn.Module):
    def __init__(self, d, norm=True):
        super().__init__()
        self.norm = nn.LayerNorm(d) if norm else nn.Identity()
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class PreNormNet(nn.Module):
    """Blocks 0 and 1 have no norm, so a declaration that leaves the norm out is right for them and
    wrong from block 2 on."""

    def __init__(self, d=16):
        super().__init__()
        self.embed = nn.Linear(8, d)
        self.layers = nn.ModuleList(PreNormBlock(d, norm=i >= 2) for i in range(4))
        self.fc = nn.Linear(d, 5)

    def forward(self, x):
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.fc(x.mean(1))


def test_declaration_checks_itself_on_an_example():
    torch.manual_seed(0)
    m, x = PreNormNet().eval(), torch.randn(2, 6, 8)
    keywords = dict(stem="embed", blocks="layers.*", head=[lambda h: h.mean(1), "fc"])
    with pytest.raises(UserError) as e:  # the norm left out of branch=
        respaths.declare(m, **keywords, branch=["mlp"], example_input=x)
    msg = str(e.value)
    assert one_sentence(msg), msg
    assert "block 2 (layers.2) is the first that differs" in msg and "branch=" in msg
    assert all(not mod.training for mod in m.modules())  # the check kept the modes it found
    with pytest.raises(UserError, match="does not know how to see"):
        respaths.view(m)  # the wrong declaration was not kept
    v = respaths.declare(m, **keywords, branch=["norm", "mlp"], example_input=x)
    assert torch.equal(v(x), m(x))
    with pytest.raises(UserError, match="difference is in the head"):
        respaths.declare(PreNormNet().eval(), **dict(keywords, head="fc"), branch=["norm", "mlp"],
                         example_input=x[:, :5])  # the head leaves out the mean over tokens: shapes differ
    with pytest.raises(UserError, match="stem's output"):
        respaths.declare(PreNormNet().eval(), **dict(keywords, stem=lambda t: t @ torch.ones(8, 16)),
                         branch=["norm", "mlp"], example_input=x)


@needs_torchvision
def test_view_of_any_model_checks_itself_on_an_example():
    r = randomize_bn(torchvision.models.resnet18(weights=None, num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(respaths.view(r, x)(x), r(x))
    block = r.layer2[1]
    block.forward = lambda t: block.bn2(block.conv2(block.relu(block.bn1(block.conv1(t))))) + t  # no final ReLU
    respaths.view(r)  # without an example nothing is run
    with pytest.raises(UserError) as e:
        respaths.view(r, x)
    msg = str(e.value)
    assert one_sentence(msg) and "block 3 (layer2.1) is the first that differs" in msg, msg


@needs_torchvision
def test_unknown_model_is_one_sentence():
    with pytest.raises(UserError) as e:
        respaths.view(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    msg = str(e.value)
    assert one_sentence(msg), msg
    assert "Sequential" in msg and "torchvision" in msg and "respaths.declare" in msg


@torch.no_grad()
def test_common_layout_with_another_forward_is_refused():
    class NoFinalReLU(AkaBasicBlock):  # the layout, but not the computation
        def forward(self, x):
            return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.shortcut(x)

    m = randomize_bn(AkaResNet(NoFinalReLU, [1, 1, 1]))
    with pytest.raises(UserError, match="computes something else") as e:
        respaths.view(m)
    assert one_sentence(str(e.value))
    assert all(not mod.training for mod in m.modules())  # the check restored the modes it found
