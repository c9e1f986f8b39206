"""torchrun with 2 CPU processes (gloo) writes the files one process writes.

One torchrun launch runs this file as its worker (see `worker`): a lesion sweep, a reorder sweep
and a path-gradient sweep on a tiny resnet, two of them resuming from a journal cut short,
data-parallel training, and a sweep refused because the ranks' weights differ. The test then
compares with the same work done in one process here: sweep files identical record for record
(wall-clock "seconds" aside), a BN-free model's weights after one data-parallel epoch equal to one
process's up to rounding, and a checkpoint written by 2 ranks resumed by 1.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch has no torch.distributed with gloo")


# ---------------------------------------------------------------------------------------------
# The work, the same in one process and in each rank


def make_checkpoint(path: Path) -> None:
    from respaths.io.checkpoint import save_checkpoint
    from respaths.data import load_dataset
    from respaths.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=3, num_classes=10, width=0.25)  # 9 blocks, 5 swappable pairs
    save_checkpoint(path, model, {"dataset": load_dataset("synthetic", split="test").info(), "epoch": 0})


def tiny_view(root: Path):
    from respaths.adapters import view as make_view
    from respaths.io.checkpoint import load_checkpoint
    from respaths.data import batches, load_dataset

    model, _ = load_checkpoint(root / "checkpoint")
    data = load_dataset("synthetic", split="test", limit=64)
    train = [b for _, b in zip(range(2), batches(load_dataset("synthetic", split="train", limit=16), 8))]
    return make_view(model, train[0][0][:2]), data, train


def sweeps(root: Path, out: Path) -> None:
    from respaths.experiments.lesion import lesion_random, reorder
    from respaths.paths import run_path_gradients

    view, data, train = tiny_view(root)
    lesion_random(view, data, k="1-3", samples=3, seed=0, out=str(out / "lesion-random"), batch_size=32, chunk=2)
    reorder(view, data, k="1-2", samples=3, seed=0, out=str(out / "reorder"), batch_size=32, chunk=2)
    run_path_gradients(view, train, str(out / "paths"), {"model": "tiny"}, range(10), samples=5, seed=0)


def train_config(out: Path, epochs: int):
    from respaths.training.trainer import TrainConfig

    # no batch norm: one data-parallel step must equal one process's step up to rounding;
    # batch 63 over 250 images: global batches of 63, 63, 63, 61, split 32/31 and 31/30
    return TrainConfig(model="vgg15-nobn", dataset="synthetic", width=0.25, epochs=epochs, batch_size=63,
                       lr=0.02, warmup="off", limit_train=250, limit_test=40, device="cpu", out=str(out),
                       progress=False, quiet=True)


def stop_after_one_epoch(trainer) -> None:
    """What a run killed after its first epoch leaves: the checkpoint of epoch 1 (of 2)."""
    from tqdm import tqdm

    with tqdm(disable=True) as bar:
        trainer.history.append(trainer.train_epoch(bar))
    trainer.epoch = 1
    trainer.save()


def worker(tmp: Path) -> None:
    """Each torchrun rank: the sweeps into tmp/two, a training run, a run stopped after one epoch."""
    from respaths import distributed
    from respaths.training.ddp import DistributedTrainer
    from respaths.training.train import train

    torch.set_num_threads(1)
    assert distributed.init() == 2
    sweeps(tmp, tmp / "two")
    train(train_config(tmp / "two" / "train-done", epochs=1))  # train() picks DistributedTrainer itself
    stop_after_one_epoch(DistributedTrainer(train_config(tmp / "two" / "train-stopped", epochs=2)))
    different_weights_are_refused(tmp)


def different_weights_are_refused(tmp: Path) -> None:
    """Rank 1 with other weights (as a fresh random initialisation per process would give)."""
    from respaths import distributed
    from respaths.core import UserError
    from respaths.experiments.lesion import lesion_single

    view, data, _ = tiny_view(tmp)
    if distributed.rank() == 1:
        with torch.no_grad():
            next(view.model.parameters()).add_(1e-3)
    try:
        lesion_single(view, data, out=str(tmp / "two" / "mixed"))
    except UserError as e:
        (tmp / "two" / f"refused-{distributed.rank()}.txt").write_text(str(e))


# ---------------------------------------------------------------------------------------------
# The test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cut_journal(finished: Path, journal: Path, keep: int) -> None:
    """The journal a run killed after `keep` records leaves, made from a finished file."""
    doc = json.loads(finished.read_text())
    lines = [{"schema": doc["schema"], "meta": doc["meta"]}] + doc["records"][:keep]
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))


def without_seconds(doc: dict) -> dict:
    return dict(doc, records=[{k: v for k, v in r.items() if k != "seconds"} for r in doc["records"]])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from respaths.training.trainer import Trainer

    tmp = tmp_path_factory.mktemp("distributed")
    make_checkpoint(tmp / "checkpoint")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sweeps(tmp, tmp / "one")
        stop_after_one_epoch(Trainer(train_config(tmp / "one" / "train-stopped", epochs=2)))
    finally:
        torch.set_num_threads(threads)
    cut_journal(tmp / "one" / "lesion-random.json", tmp / "two" / "lesion-random.partial.jsonl", keep=4)
    cut_journal(tmp / "one" / "paths.json", tmp / "two" / "paths.partial.jsonl", keep=3)

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           __file__, str(tmp)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return tmp


@pytest.mark.parametrize("name", ["lesion-random", "reorder", "paths"])
def test_sweep_files_equal_one_process(runs, name):
    one = json.loads((runs / "one" / f"{name}.json").read_text())
    two = json.loads((runs / "two" / f"{name}.json").read_text())
    assert len(two["records"]) > 5
    assert without_seconds(two) == without_seconds(one)
    assert len({json.dumps(r.get("loss", r.get("mean"))) for r in two["records"]}) > 2  # not all alike
    assert not (runs / "two" / f"{name}.partial.jsonl").exists()
    assert (runs / "two" / f"{name}.csv").read_text().count("\n") == len(one["records"]) + 1


@pytest.mark.parametrize("name, kept", [("lesion-random", 4), ("paths", 3)])
def test_sweeps_resume_from_a_cut_journal(runs, name, kept):
    one = json.loads((runs / "one" / f"{name}.json").read_text())["records"]
    two = {r["key"]: r for r in json.loads((runs / "two" / f"{name}.json").read_text())["records"]}
    # the journal's records were kept as they were, wall-clock seconds included: not computed again
    assert [two[r["key"]] for r in one[:kept]] == one[:kept]


def test_ranks_with_different_weights_are_refused(runs):
    for rank in (0, 1):
        assert "ranks hold different model weights" in (runs / "two" / f"refused-{rank}.txt").read_text()
    assert not (runs / "two" / "mixed.json").exists()


def test_data_parallel_epoch_equals_one_process(runs):
    from respaths.io.checkpoint import load_train_state, read_weights, read_meta

    one, two = runs / "one" / "train-stopped" / "checkpoint", runs / "two" / "train-stopped" / "checkpoint"
    w1, w2 = read_weights(one), read_weights(two)
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6, msg=k)
    # the data order and augmentation state is the global one: exactly one process's
    s1, s2 = load_train_state(one)["rng"]["generators"], load_train_state(two)["rng"]["generators"]
    assert torch.equal(s1["data"], s2["data"]) and torch.equal(s1["depth"], s2["depth"])
    meta = read_meta(two)
    assert meta["distributed"] == {"ranks": 2, "sync_bn": False}
    assert meta["history"][0]["ranks"] == 2 and meta["epoch"] == 1


def test_train_under_torchrun_writes_one_checkpoint(runs):
    from respaths.io.checkpoint import read_meta

    run = runs / "two" / "train-done"
    meta = read_meta(run / "checkpoint")
    assert meta["epoch"] == 1 and meta["distributed"]["ranks"] == 2
    assert (run / "metrics.csv").read_text().count("\n") == 2
    row = meta["history"][0]
    assert 0 <= row["test_error"] <= 1 and row["train_loss"] > 0
    assert not list(run.glob("*.tmp-*"))  # no rank left a half-written checkpoint


def test_two_rank_checkpoint_resumes_in_one_process(runs):
    from respaths.io.checkpoint import read_weights, read_meta
    from respaths.training.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = train(train_config(runs / "two" / "train-stopped", epochs=2))
        reference = train(train_config(runs / "one" / "train-stopped", epochs=2))
    finally:
        torch.set_num_threads(threads)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert resumed.history[0]["ranks"] == 2 and "ranks" not in resumed.history[1]
    w1, w2 = read_weights(reference.checkpoint), read_weights(resumed.checkpoint)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6, msg=k)
    assert read_meta(resumed.checkpoint)["epoch"] == 2
    assert resumed.test_error == pytest.approx(reference.test_error, abs=1 / 40)


def test_sync_bn_on_cpu_is_refused_in_one_sentence(tmp_path, monkeypatch):
    from respaths import distributed
    from respaths.core import UserError
    from respaths.training.ddp import DistributedTrainer

    monkeypatch.setattr(distributed, "init", lambda: 2)  # as if torchrun had started 2 ranks
    monkeypatch.setattr(distributed, "world", lambda: 2)
    with pytest.raises(UserError, match="--sync-bn needs CUDA GPUs"):
        DistributedTrainer(replace(train_config(tmp_path / "run", epochs=1), sync_bn=True))
    assert not (tmp_path / "run").exists()


def test_commands_that_do_not_split_their_work_refuse_torchrun(monkeypatch, capsys):
    from respaths.cli import main

    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)  # as torchrun sets them; no process group is joined
    assert main(["evaluate", "no-such-checkpoint"]) == 2
    assert "does not split its work across ranks; run it without torchrun" in capsys.readouterr().err


if __name__ == "__main__":  # one torchrun rank
    worker(Path(sys.argv[1]))
