"""Helpers several test files share: small models with non-trivial BatchNorms, their data, and the
check that an error message is one sentence."""
import re

import pytest
import torch
from torch import nn

import respaths

# optional packages: their tests skip one by one, so that the torch-only cases still run without them
try:
    import torchvision
    from torchvision.models import resnet as tvr
except ImportError:
    torchvision = tvr = None
try:
    import timm
except ImportError:
    timm = None
needs_torchvision = pytest.mark.skipif(torchvision is None, reason="torchvision is not installed")
needs_timm = pytest.mark.skipif(timm is None, reason="timm is not installed")


def tiny(name: str, seed: int = 0) -> torch.nn.Module:
    """A width-0.25 model whose BatchNorms are not the identity, so that every block matters."""
    torch.manual_seed(seed)
    m = respaths.build_model(name, in_channels=3, num_classes=10, width=0.25)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.normal_(1.0, 0.3)
    return m.eval()


def data(n: int = 40, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that a wrong order of operations would show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


def one_sentence(msg: str) -> bool:
    return msg.endswith(".") and len(re.findall(r"[.!?](\s|$)", msg)) == 1


def evaluate_with_cli(path, capsys, *options) -> dict:
    """`respaths evaluate PATH --json` on the CPU: the error and loss a user is shown."""
    import json

    from respaths import cli
    capsys.readouterr()
    assert cli.main(["evaluate", str(path), "--device", "cpu", "--json", *map(str, options)]) == 0
    return json.loads(capsys.readouterr().out)
