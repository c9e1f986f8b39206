"""A model from a spec and local weights (respaths.opening.load_model): weights round trips, bad
specs, checkpoint directories."""
from __future__ import annotations

import pytest
import torch

import respaths
from respaths.core import UserError
from respaths.opening import load_model



from tests.helpers import needs_timm, needs_torchvision, one_sentence, randomize_bn, torchvision  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Loading


calls = []


def _mark():
    calls.append("unpickled")
    return {}


class Payload:
    def __reduce__(self):
        return (_mark, ())


@torch.no_grad()
@needs_torchvision
@needs_timm
def test_load_model_weights_round_trip(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(0)
    src = randomize_bn(torchvision.models.resnet18(weights=None, num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, tmp_path / "w.safetensors")
    m, meta = load_model("torchvision:resnet18", weights=tmp_path / "w.safetensors", num_classes=10)
    assert torch.equal(m(x), src(x)) and not m.training and meta["model"]["spec"] == "torchvision:resnet18"
    # torch.load(weights_only=True), wrapped the way DataParallel checkpoints are
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "w.pth")
    m, _ = load_model("torchvision.models:resnet18", weights=tmp_path / "w.pth", num_classes=10)
    assert torch.equal(m(x), src(x))
    # a pickle with an arbitrary object is refused, and its code never runs
    torch.save({"state_dict": sd, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="never unpickles"):
        load_model("torchvision:resnet18", weights=tmp_path / "evil.pt", num_classes=10)
    assert calls == []
    with pytest.raises(UserError, match="do not fit"):
        load_model("torchvision:resnet18", weights=tmp_path / "w.safetensors")  # 1000 classes
    t, _ = load_model("timm:resnet18", num_classes=10)
    assert respaths.view(t).adapter == "timm"
    r, meta = load_model("respaths:resnet20", num_classes=10)
    assert respaths.view(r).adapter == "respaths"


@needs_torchvision
@needs_timm
def test_load_model_bad_specs(tmp_path):
    for spec, words in [("torchvision:resnet19", "did you mean resnet18"), ("timm:resnet_nope", "timm has no"),
                        ("resnet50", "neither a checkpoint directory nor a model spec"), ("no_such_module_x:f", "cannot import"),
                        ("torchvision.models:nothing_here", "no function")]:
        with pytest.raises(UserError, match=words) as e:
            load_model(spec)
        assert one_sentence(str(e.value)), str(e.value)
    with pytest.raises(UserError, match="does not exist"):
        load_model("torchvision:resnet18", weights=tmp_path / "missing.safetensors")


def test_load_checkpoint_dir(tmp_path):
    ckpt = pytest.importorskip("respaths.io.checkpoint")
    src = respaths.build_model("resnet8", num_classes=10, width=0.25).eval()
    ckpt.save_checkpoint(tmp_path / "run", src, {"dataset": {"name": "synthetic"}})
    m, meta = load_model(str(tmp_path / "run"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), src(x))
    assert meta["dataset"]["name"] == "synthetic" and respaths.view(m).adapter == "respaths"
    with pytest.raises(UserError, match="holds its own weights"):
        load_model(str(tmp_path / "run"), weights=tmp_path / "w.safetensors")
