import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import respaths
from respaths.cli import main
from respaths.io.checkpoint import load_checkpoint, load_train_state, save_checkpoint
from respaths.core import UserError
from respaths.data import load_dataset, normalize
from respaths.training.train import train
from respaths.training.trainer import LRSchedule, Trainer, TrainConfig, evaluate
from tests.helpers import evaluate_with_cli

TINY = dict(model="resnet8", dataset="synthetic", width=0.5, batch_size=32, threads=1, progress=False, quiet=True)


def test_lr_schedule_step_cosine_and_warmup():
    steps = 164 * 391
    s = LRSchedule(0.1, steps, "step")
    lr_at_epoch = lambda e: s.lr(e * 391)
    assert lr_at_epoch(0) == 0.1 and s.lr(82 * 391 - 1) == 0.1
    assert lr_at_epoch(82) == pytest.approx(0.01) and s.lr(123 * 391 - 1) == pytest.approx(0.01)
    assert lr_at_epoch(123) == pytest.approx(0.001) and lr_at_epoch(163) == pytest.approx(0.001)
    c = LRSchedule(0.1, 1000, "cosine")
    assert c.lr(0) == 0.1 and c.lr(500) == pytest.approx(0.05) and c.lr(999) < 1e-5
    w = LRSchedule(0.1, steps, "step", warmup=True, warmup_steps=400)
    assert w.lr(0) == pytest.approx(0.01)
    w.observe(0, 0.85)
    assert w.lr(1) == pytest.approx(0.01)
    w.observe(1, 0.79)  # training error below 80%: back to 0.1 for good
    assert w.lr(2) == 0.1 and w.state_dict() == {"warming": False}
    w2 = LRSchedule(0.1, steps, "step", warmup=True, warmup_steps=3)
    for k in range(3):
        w2.observe(k, 0.9)
    assert w2.lr(3) == 0.1  # never more than warmup_steps


def test_warmup_only_for_110_layers_and_more(tmp_path):
    deep = Trainer(TrainConfig(**dict(TINY, model="resnet110", width=0.0625, out=str(tmp_path / "a"))))
    shallow = Trainer(TrainConfig(**dict(TINY, out=str(tmp_path / "b"))))
    assert deep.schedule.warming and not shallow.schedule.warming
    assert deep.schedule.warmup_steps == 32  # one epoch of 1024 images in batches of 32: under 400


def test_trainer_learns_writes_metrics_and_checkpoint(tmp_path, capsys):
    r = train(dict(TINY, epochs=3, lr=0.05, out=str(tmp_path)))
    assert r.test_error < 0.5  # chance is 0.9
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss,train_error,test_loss,test_error") and len(rows) == 4
    assert r.history[0]["train_loss"] > r.history[-1]["train_loss"]
    model, meta = load_checkpoint(r.checkpoint)
    assert meta["epoch"] == 3 and meta["model"]["name"] == "resnet8" and meta["dataset"]["name"] == "synthetic"
    assert meta["respaths_version"] == respaths.__version__ and meta["metrics"]["test_error"] == r.test_error
    # the final test error equals a naive computation over the whole test set at once
    test = load_dataset("synthetic", split="test")
    with torch.no_grad():
        x = normalize(test.images, tuple(meta["dataset"]["mean"]), tuple(meta["dataset"]["std"]))
        naive = (model(x).argmax(1) != test.labels).float().mean().item()
    assert naive == pytest.approx(r.test_error, abs=1e-9)
    assert evaluate_with_cli(tmp_path, capsys)["error"] == pytest.approx(naive, abs=1e-9)
    # running the same command again finds the run finished and changes nothing
    before = load_file(r.checkpoint / "model.safetensors")
    again = train(dict(TINY, epochs=3, lr=0.05, out=str(tmp_path)))
    assert again.test_error == r.test_error
    after = load_file(r.checkpoint / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_round_trip_and_crash_recovery(tmp_path):
    torch.manual_seed(0)
    m = respaths.build_model("preresnet14", in_channels=3, num_classes=7, width=0.5, shortcut="B",
                             stochastic_depth=0.5).to(memory_format=torch.channels_last)
    m.train()(torch.randn(4, 3, 16, 16))  # move the batch-norm statistics off their defaults
    m.eval()
    state = {"epoch": 3, "rng": torch.get_rng_state(), "generator": torch.Generator().manual_seed(1).get_state()}
    path = save_checkpoint(tmp_path / "ck", m, {"epoch": 3, "dataset": {"name": "synthetic"}}, state)
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors", "train_state.pt"]
    m2, meta = load_checkpoint(path)
    m2 = m2.to(memory_format=torch.channels_last)  # the same layout computes bit-identical outputs
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert meta["model"]["config"]["stochastic_depth"] == 0.5 and meta["model"]["config"]["shortcut"] == "B"
    assert [b.survival for b in m2.residual_blocks] == [b.survival for b in m.residual_blocks]
    assert torch.equal(load_train_state(path)["rng"], state["rng"])
    # a crash between the two renames of the next save leaves only checkpoint.old: it is recovered
    os.replace(path, tmp_path / "ck.old")
    m3, _ = load_checkpoint(tmp_path / "ck")
    m3 = m3.to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(m(x), m3(x))
    save_checkpoint(tmp_path / "ck", m, {"epoch": 4})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    with pytest.raises(UserError, match="not a respaths checkpoint"):
        load_checkpoint(tmp_path)


def test_fixed_m_and_stochastic_depth_switch_blocks_per_batch(tmp_path):
    seen = []
    for kind, opt in (("fixed", {"fixed_m": 2}), ("sd", {"stochastic_depth": 0.5})):
        t = Trainer(TrainConfig(**dict(TINY, model="resnet14", epochs=1, limit_train=320, out=str(tmp_path / kind),
                                       **opt)))
        masks = []
        t.model.register_forward_pre_hook(
            lambda mod, args: masks.append([b.active for b in mod.residual_blocks]) if mod.training else None)
        t.run()
        seen.append(masks)
        assert len(masks) == 10
        assert all(b.active for b in t.model.residual_blocks)  # all on again after training
    fixed, sd = seen
    assert all(sum(m) == 2 for m in fixed) and len({tuple(m) for m in fixed}) > 1
    assert len({tuple(m) for m in sd}) > 1
    # linear decay: the first block survives with p = 1 - 0.5/6, the last with 0.5
    assert sum(m[0] for m in sd) > sum(m[-1] for m in sd)


def test_different_run_is_refused_unless_resume_or_force(tmp_path):
    out = str(tmp_path)
    train(dict(TINY, epochs=1, limit_train=64, out=out))
    with pytest.raises(UserError, match="holds a different run \\(width is 0.5 there, 0.25 now\\).*--resume.*--force"):
        train(dict(TINY, epochs=1, limit_train=64, width=0.25, out=out))
    r = train(dict(TINY, epochs=1, limit_train=64, width=0.25, out=out, resume=True))  # continues the saved run
    assert r.meta["train"]["width"] == 0.5
    r = train(dict(TINY, epochs=1, limit_train=64, width=0.25, out=out, force=True))
    assert r.meta["train"]["width"] == 0.25 and load_checkpoint(r.checkpoint)[1]["model"]["config"]["width"] == 0.25


def test_the_trainer_takes_its_file_names_from_the_run_layout(tmp_path, monkeypatch):
    """respaths.io.layout names a training run's files: the trainer writes, resumes from and starts over
    with the names it is given, and spells none of its own."""
    from respaths.training import trainer
    monkeypatch.setattr(trainer, "training_checkpoint", lambda d: Path(d) / "weights")
    monkeypatch.setattr(trainer, "training_settings", lambda d: Path(d) / "settings.json")
    out = tmp_path / "run"
    r = train(dict(TINY, epochs=1, limit_train=64, out=str(out)))
    assert r.checkpoint == out / "weights"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "settings.json", "weights"]
    again = train(dict(TINY, epochs=1, limit_train=64, width=0.25, out=str(out), resume=True))
    assert again.meta["train"]["width"] == 0.5  # the run was found where the layout says
    (out / "weights.old").mkdir()  # a previous checkpoint left by an interrupted save
    (out / "weights.old" / "meta.json").write_text("{}")
    r = train(dict(TINY, epochs=1, limit_train=64, width=0.25, out=str(out), force=True))
    assert r.meta["train"]["width"] == 0.25
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "settings.json", "weights"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    t = Trainer(TrainConfig(**dict(TINY, epochs=3, limit_train=64, out=str(tmp_path))))
    step = t.train_step

    def poisoned(x, y):
        if t.epoch == 1:
            t.model.head[-1].weight.data.fill_(float("nan"))
        return step(x, y)

    t.train_step = poisoned
    with pytest.raises(UserError, match="became nan in epoch 2 .*epoch 1 .* is kept"):
        t.run()
    model, meta = load_checkpoint(tmp_path / "checkpoint")
    assert meta["epoch"] == 1 and all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_options_are_one_sentence():
    for opts, msg in ((dict(model="resnet21"), "6n\\+2"), (dict(model="densenet"), "known models"),
                      (dict(epochs=0), "--epochs must be at least 1"), (dict(nonsense=1), "unknown training option")):
        with pytest.raises(UserError, match=msg):
            train(dict(TINY, out="/nonexistent/never-written", **opts))
    assert not Path("/nonexistent/never-written").exists()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "respaths.cli", "train", *args]


def test_kill_9_and_resume_gives_bit_identical_weights(tmp_path):
    """Kill `respaths train` with SIGKILL after its first checkpoint, run the same command with --resume,
    and compare with an uninterrupted run (done in this process meanwhile) bit for bit."""
    settings = dict(model="resnet14", dataset="synthetic", width=0.5, epochs=3, batch_size=32, limit_train=384,
                    limit_test=64, stochastic_depth=0.5, threads=1)
    args = [a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", str(v))] + ["--no-progress", "--quiet"]
    env = dict(os.environ, RESPATHS_NO_DOWNLOAD="1")
    victim = subprocess.Popen(cli(*args, "--out", str(tmp_path / "killed")), env=env)
    meta = tmp_path / "killed" / "checkpoint" / "meta.json"

    def kill_after_first_checkpoint():
        deadline = time.time() + 300
        while not meta.exists() and victim.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    train(dict(settings, out=str(tmp_path / "full"), progress=False, quiet=True))
    killer.join()
    assert victim.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = json.loads(meta.read_text())["epoch"]
    assert 1 <= killed_at < 3
    subprocess.run(cli(*args, "--out", str(tmp_path / "killed"), "--resume"), env=env, check=True, timeout=300)
    a = load_file(tmp_path / "full" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = lambda d: [r.split(",")[:6] for r in (tmp_path / d / "metrics.csv").read_text().splitlines()]
    assert rows("full") == rows("killed") and len(rows("full")) == 4


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir() and not os.environ.get("RESPATHS_DATA"),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_end_to_end_fashion_mnist_one_epoch(tmp_path, capsys):
    try:
        load_dataset("fashion-mnist", split="test", limit=1, download=False)
    except UserError:
        pytest.skip("Fashion-MNIST is not installed")
    # 250 steps of batch 16 without augmentation: a ResNet learns little more in one short epoch
    r = train(dict(model="resnet8", dataset="fashion-mnist", width=0.5, epochs=1, limit_train=4000,
                   limit_test=2000, batch_size=16, lr=0.05, augment=False, threads=1, progress=False,
                   quiet=True, out=str(tmp_path)))
    assert r.test_error < 0.4, r.history  # chance: 0.9; this run gets about 0.31
    assert main(["evaluate", str(tmp_path), "--limit", "2000", "--device", "cpu"]) == 0
    assert f"test error {r.test_error:.2%}" in capsys.readouterr().out


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_saves_fp32_weights(tmp_path, precision):
    r = train(dict(TINY, epochs=1, limit_train=64, limit_test=32, precision=precision, out=str(tmp_path)))
    assert math.isfinite(r.history[0]["train_loss"]) and r.meta["precision"] == precision
    weights = load_file(r.checkpoint / "model.safetensors")
    assert all(w.dtype in (torch.float32, torch.int64) for w in weights.values())
    if precision == "fp16":
        assert load_train_state(r.checkpoint)["scaler"]["scale"] > 0  # the GradScaler is saved for resuming


def test_a_preresnet_checkpoint_of_respaths_0_1_is_refused_with_the_reason(tmp_path):
    """0.1's pre-activation ResNets had no BatchNorm after conv1; their weights cannot fit 0.2's model."""
    from safetensors.torch import save_file
    model = respaths.build_model("preresnet20", in_channels=1, width=0.25)
    save_checkpoint(tmp_path, model, {"respaths_version": "0.1.0"})
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["respaths_version"] = "0.1.0"
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("stem.1.")}, tmp_path / "model.safetensors")
    with pytest.raises(UserError, match=r'Missing key\(s\).*"stem.1.weight".*respaths 0.1.*retrain it'):
        load_checkpoint(tmp_path)
