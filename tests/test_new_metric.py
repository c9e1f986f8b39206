"""A new metric is one class: defined here and nowhere else, it scores `lesion` and the report reads it.

The toy metric is the mean top-1 softmax probability (higher is better); its class names its record
field, direction, label and formats, and respaths.metrics finds it by the name the result files record.
"""
import json

import pytest
import torch

import respaths
from respaths import metrics
from respaths.cli import main
from respaths.experiments.lesion import lesion_random, lesion_single, lesioned_model
from tests.helpers import data, tiny


@pytest.fixture
def confidence():
    class Confidence(metrics.Metric):
        name = "toy-confidence"
        field = "confidence"
        higher_is_better = True
        fields = ("n", "confidence")
        label = "1 − confidence"
        axis_label = "1 − mean top-1 probability"
        plot_label = "mean top-1 probability"
        summary_name = "confidence"

        def worse(self, record):
            return 1.0 - record["confidence"]

        def start(self, plans, n_blocks):
            self.total, self.n = [0.0] * len(plans), [0] * len(plans)
            return list(plans)

        def add(self, pids, output, batch):
            top = output[:len(batch["labels"])].float().softmax(-1).max(-1).values
            for pid in pids:
                self.total[pid] += float(top.double().sum())
                self.n[pid] += len(top)

        def results(self):
            return [{"n": n, "confidence": t / n} for t, n in zip(self.total, self.n)]

    yield Confidence
    del metrics.METRICS[Confidence.name]  # registered by being defined; no other test sees it


def mean_confidence(model, x):
    with torch.inference_mode():
        return float(model(x).softmax(-1).max(-1).values.double().mean())


def test_a_toy_metric_runs_through_lesion_and_report(confidence, tmp_path):
    model = tiny("resnet20")
    x, y = data(24)
    view = respaths.view(model, x[:2])
    assert isinstance(metrics.metric_named("toy-confidence"), confidence)

    single = lesion_single(view, (x, y), batch_size=8, metric=confidence(), out=str(tmp_path / "lesion-single"))
    base = single[0]
    assert base["confidence"] == pytest.approx(mean_confidence(model, x), rel=1e-6)
    for r in single[1:]:  # each plan against the model with the block really removed
        plan = respaths.delete_blocks(len(view), r["deleted"])
        assert r["confidence"] == pytest.approx(mean_confidence(lesioned_model(model, plan, x[:2]).eval(), x), rel=1e-6)
        assert r["delta"] == pytest.approx(r["confidence"] - base["confidence"])
        assert "error" not in r and "mcnemar_p" not in r
    assert len({round(r["confidence"], 9) for r in single}) > 2
    lesion_random(view, (x, y), k="1,2", samples=2, batch_size=8, metric=confidence(),
                  out=str(tmp_path / "lesion-random"))
    meta = json.loads((tmp_path / "lesion-single.json").read_text())["meta"]
    assert meta["metric"] == "toy-confidence" and meta["chance"] is None
    again = lesion_single(view, (x, y), batch_size=8, metric=confidence(), out=str(tmp_path / "lesion-single"))
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in single]  # reopened: its records checked by field

    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report.html")]) == 0
    html = (tmp_path / "report.html").read_text()
    m = confidence()
    assert "scored by 1 − confidence" in html  # the class's label, not a classifier's "test error"
    assert f"<td>{m.text(m.worse(base))}</td>" in html  # the models table: the whole net's value, its format
    assert "1 − confidence stands for the error" in html  # how the verdict rules read this metric
    assert "<th>1 − confidence</th>" in html and "<th>test error</th>" not in html  # the models table's column
