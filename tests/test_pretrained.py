"""Published weights (akamaster's option-A CIFAR ResNet-20, real CIFAR-10 training) through the CLI,
against a plain functional forward from the state dict written here, with no respaths code."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "pretrained" / "akamaster-cifar10" / "resnet20-12fca82f.th"
MAKE = SHARED / "datasets" / "make_cifar10.py"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LIMIT = 500


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"no published weights at {WEIGHTS}")
    env = os.environ.get("RESPATHS_DATA")
    if env and (Path(env) / "cifar-10-batches-py").is_dir():
        return Path(env)
    cache = tmp_path_factory.mktemp("cifar10-jpeg")  # make_cifar10.py takes ~15 s
    if not (cache / "cifar-10-batches-py" / "test_batch").is_file():
        if not MAKE.is_file():
            pytest.skip("no CIFAR-10 under $RESPATHS_DATA and no shared/datasets/make_cifar10.py to write it")
        subprocess.run([sys.executable, str(MAKE), str(cache)], check=True, capture_output=True)
    return cache


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


def test_cli_lesion_of_published_resnet20_equals_plain_forward(data_dir, tmp_path):
    out = tmp_path / "runs"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "respaths.cli", "lesion", "--model", "respaths:resnet20",
                          "--weights", str(WEIGHTS), "--dataset", "cifar10", "--data-dir", str(data_dir),
                          "--normalize", "imagenet", "--limit", str(LIMIT), "--out", str(out), "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "stripped 'module.'" in run.stderr and "akamaster" in run.stderr
    doc = json.loads((out / "lesion-single.json").read_text())
    assert doc["meta"]["preprocessing"] == {"normalize": "imagenet", "mean": list(MEAN), "std": list(STD)}
    records = {tuple(r["deleted"]): r for r in doc["records"]}

    data, x, sd = images_and_weights(data_dir, LIMIT)
    with torch.no_grad():
        base = (forward(sd, x).argmax(1) != data.labels).sum().item()
        assert records[()]["errors"] == base
        assert base / LIMIT < 0.25  # published 8.27% on real CIFAR-10; the JPEG q75 copy costs some
        for i in range(9):
            wrong = (forward(sd, x, deleted=i).argmax(1) != data.labels).sum().item()
            assert records[(i,)]["errors"] == wrong, f"block {i}"


def test_cli_evaluate_of_published_resnet20_equals_plain_forward(data_dir, capsys):
    from respaths import cli
    assert cli.main(["evaluate", "--model", "respaths:resnet20", "--weights", str(WEIGHTS), "--dataset", "cifar10",
                     "--data-dir", str(data_dir), "--normalize", "imagenet", "--limit", str(LIMIT), "--device", "cpu",
                     "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    data, x, sd = images_and_weights(data_dir, LIMIT)
    with torch.no_grad():
        wrong = (forward(sd, x).argmax(1) != data.labels).sum().item()
    assert r["n"] == LIMIT and r["error"] == pytest.approx(wrong / LIMIT, abs=1e-12)
    assert r["model"] == "respaths:resnet20" and r["weights"] == str(WEIGHTS)
