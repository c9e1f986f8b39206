"""respaths.opening's registry of model sources: what a model string is gets decided in one place,
and a new kind of model is one entry there."""
import json
import re

import pytest
import torch
from safetensors.torch import save_file

import respaths
from respaths import cli, opening
from respaths.core import UserError
from respaths.models import build_model


@pytest.mark.parametrize("model, name", [("respaths:resnet20", "respaths"), ("torchvision:resnet18", "torchvision"),
                                         ("timm:resnet18", "timm"), ("tests.helpers:tiny", "factory")])
def test_a_spec_is_decided_by_its_prefix(model, name):
    assert opening.source_of(model).name == name


def test_directories_and_files_are_decided_by_what_marks_them(tmp_path):
    respaths.io.checkpoint.save_checkpoint(tmp_path / "ck", build_model("resnet8", width=0.25), {})
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "pruned").mkdir()
    (tmp_path / "pruned" / "respaths_prune.json").write_text("{}")
    assert [opening.source_of(str(tmp_path / d)).name for d in ("ck", "hf", "pruned")] == ["checkpoint", "hf", "pruned"]
    assert opening.source_of(str(tmp_path / "m.Q4_1.gguf")).name == "gguf"  # a file, by its name
    for bad in ("resnet50", str(tmp_path / "nothing")):
        with pytest.raises(UserError, match="neither a checkpoint directory nor a model spec"):
            opening.source_of(bad)


class ToySource(opening.ModelSource):
    """A JSON file naming a respaths model and the seed of its random weights (a model format respaths
    does not know), as the one place a new source is written."""

    name, form = "toy", "FILE.toy.json"

    def detect(self, model):
        return model.endswith(".toy.json")

    def load(self, model, options, data=None):
        spec = json.loads(open(model).read())
        torch.manual_seed(spec["seed"])
        net = build_model(spec["name"], width=spec["width"])
        for m in net.modules():  # BatchNorms that are not the identity, so that every block matters
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.weight.data.normal_(1.0, 0.3)
        return opening.Loaded(net, spec)

    def describe(self, model, options, loaded=None):
        return {"toy": model}


def test_a_new_source_is_one_entry_and_lesion_and_report_run_through_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(opening, "SOURCES", list(opening.SOURCES))
    opening.register(ToySource())
    toy = tmp_path / "net.toy.json"
    toy.write_text(json.dumps({"name": "resnet8", "width": 0.25, "seed": 3}))
    common = ["--dataset", "synthetic", "--limit", "64", "--no-progress", "--no-figure"]
    assert cli.main(["lesion", str(toy), *common, "--out", str(tmp_path / "toy")]) == 0
    assert cli.main(["lesion", str(toy), *common, "--mode", "random", "--k", "1,2", "--samples", "2",
                     "--out", str(tmp_path / "toy")]) == 0
    # the same weights given the usual way give the same numbers
    net, _ = opening.load_model(str(toy))
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    assert cli.main(["lesion", "--model", "respaths:resnet8", "--model-kwargs", "width=0.25", "--weights",
                     str(tmp_path / "w.safetensors"), *common, "--out", str(tmp_path / "spec")]) == 0
    got = json.loads((tmp_path / "toy" / "lesion-single.json").read_text())
    want = json.loads((tmp_path / "spec" / "lesion-single.json").read_text())
    assert got["meta"]["source"] == {"toy": str(toy)}
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in got["records"]] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in want["records"]]
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path / "toy")]) == 0
    html = (tmp_path / "toy" / "report.html").read_text()
    row = re.search(r"<tr id='claim-single'>.*?</tr>", html, re.S).group(0)
    assert "not measured" not in row  # the report reads the toy model's results
