"""The published weights (akamaster's option-A CIFAR ResNet-20) and a plain functional forward of their
state dict, with no respaths code: the reference test_pretrained.py and study/test_run.py check against."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "pretrained" / "akamaster-cifar10" / "resnet20-12fca82f.th"
MAKE = SHARED / "datasets" / "make_cifar10.py"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        training=False, eps=1e-5)


def forward(sd: dict, x: torch.Tensor, deleted: int | None = None) -> torch.Tensor:
    """akamaster's ResNet-20: deleting block i leaves relu(shortcut(x)), as in the post-activation net."""
    x = F.relu(bn(F.conv2d(x, sd["conv1.weight"], padding=1), sd, "bn1"))
    i = 0
    for stage in (1, 2, 3):
        for j in range(3):
            p = f"layer{stage}.{j}"
            stride = 2 if stage > 1 and j == 0 else 1
            planes = sd[p + ".conv1.weight"].shape[0]
            if stride != 1 or x.shape[1] != planes:  # option A
                short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))
            else:
                short = x
            if i == deleted:
                x = F.relu(short)
            else:
                h = F.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"], stride=stride, padding=1), sd, p + ".bn1"))
                h = bn(F.conv2d(h, sd[p + ".conv2.weight"], padding=1), sd, p + ".bn2")
                x = F.relu(h + short)
            i += 1
    x = F.avg_pool2d(x, x.shape[-1]).flatten(1)
    return F.linear(x, sd["linear.weight"], sd["linear.bias"])


def images_and_weights(data_dir, limit: int):
    """The first test images (read by respaths' loader), normalised here by hand, and the published state
    dict straight from torch.load: the reference forward uses no other respaths code."""
    from respaths.data import load_dataset
    data = load_dataset("cifar10", data_dir, split="test", limit=limit)
    x = (data.images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)["state_dict"]
    return data, x, {k.removeprefix("module."): v for k, v in sd.items()}
