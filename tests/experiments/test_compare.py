"""Nets compared (respaths.experiments.compare) against evaluating each net directly."""
import json

import numpy as np
import pytest
import torch

import respaths
from respaths.core import delete_blocks


# ---------------------------------------------------------------------------------------------
# 5. stochastic depth and fixed-m nets beside the normal one

def test_compare_nets_against_direct_evaluation(tmp_path):
    from respaths.io.checkpoint import load_checkpoint, save_checkpoint
    from respaths.experiments.compare import compare_nets, load_test_split
    from respaths.core import run_plan
    from respaths.data import batches
    ckpts = {}
    for label, options in (("normal", {}), ("stochastic depth", {"stochastic_depth": 0.5}), ("fixed m=3", {"fixed_m": 3})):
        torch.manual_seed(len(ckpts))
        m = respaths.build_model("resnet14", in_channels=3, num_classes=10, width=0.25, **options)
        save_checkpoint(tmp_path / label.replace(" ", "_"), m, {"dataset": {"name": "synthetic"}})
        ckpts[label] = tmp_path / label.replace(" ", "_")
    doc = compare_nets(ckpts, out=tmp_path / "cmp", limit=48, k="1-2", samples=2, batch_size=64)
    assert doc["reference"] == "normal" and set(doc["versus"]) == {"stochastic depth", "fixed m=3"}
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["nets"].keys() == doc["nets"].keys()
    assert doc["nets"]["fixed m=3"]["training"] == {"stochastic_depth": None, "fixed_m": 3}
    for label, path in ckpts.items():  # every number against the model run directly
        model, meta = load_checkpoint(path)
        x, y = next(batches(load_test_split(meta, None, None, 48), 48))
        view = respaths.view(model, x[:1])
        net = doc["nets"][label]
        with torch.no_grad():
            assert net["test"]["errors"] == int((model(x).argmax(1) != y).sum())
            for i in (0, 2, 5):
                wrong = int((run_plan(view, x, delete_blocks(6, [i])).argmax(1) != y).sum())
                assert net["single"]["errors"][i] == pytest.approx(wrong / 48)
        assert net["random"]["k"] == [1, 2] and net["random"]["n_samples"] == 2
        lo, hi = net["test"]["error_ci"]
        assert lo <= net["test"]["error"] <= hi
    ref, sd = doc["nets"]["normal"], doc["nets"]["stochastic depth"]
    v = doc["versus"]["stochastic depth"]
    assert v["error_delta"] == pytest.approx(sd["test"]["error"] - ref["test"]["error"])
    inc = lambda n: np.mean(n["single"]["errors"]) - n["single"]["baseline"]
    assert v["resilience"]["mean_increase_delta"] == pytest.approx(inc(sd) - inc(ref))
    assert v["random_delta"]["mean_error_delta"][0] == pytest.approx(sd["random"]["mean"][0] - ref["random"]["mean"][0])
