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

from tests.published import MEAN, STD, WEIGHTS, forward, images_and_weights

LIMIT = 500


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
