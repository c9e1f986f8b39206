"""The one atomic writer: whole file or old file, no temporary left, stale ones cleaned, one run per output."""
import errno
import os
import subprocess
import sys

import pytest

from respaths.io import atomic
from respaths.core import UserError


def dead_pid():
    """The PID of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_write_replaces_whole_file(tmp_path):
    f = tmp_path / "a.json"
    atomic.write_text(f, "old\n")
    atomic.write_text(f, "new ü\r\n")  # bytes as given: no newline translation, UTF-8
    assert f.read_bytes() == "new ü\r\n".encode()
    atomic.write_bytes(f, b"\x00\x01")
    assert f.read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["a.json"]


def test_exception_leaves_old_file_and_no_tmp(tmp_path, monkeypatch):
    f = tmp_path / "a.json"
    f.write_text("old")
    with pytest.raises(ZeroDivisionError):
        with atomic.atomic_path(f) as tmp:
            tmp.write_text("half")
            1 / 0
    assert f.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]

    def full(*a):  # the disk fills up at the rename
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OSError):
        atomic.write_text(f, "new")
    assert f.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


def test_atomic_dir_swaps_and_cleans_up(tmp_path):
    d = tmp_path / "ck"
    with atomic.atomic_dir(d) as tmp:
        (tmp / "w").write_text("1")
    with atomic.atomic_dir(d) as tmp:
        (tmp / "w").write_text("2")
    assert (d / "w").read_text() == "2"
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(d) as tmp:
            (tmp / "w").write_text("3")
            raise RuntimeError
    assert (d / "w").read_text() == "2" and sorted(os.listdir(tmp_path)) == ["ck"]
    # a crash between the two renames left only ck.old: it is the directory
    os.replace(d, atomic.old_path(d))
    assert (atomic.recover_dir(d) / "w").read_text() == "2" and sorted(os.listdir(tmp_path)) == ["ck"]


def test_stale_tmp_of_a_dead_process_is_removed(tmp_path):
    pid = dead_pid()
    (tmp_path / f".ck.tmp-{pid}").mkdir()  # a checkpoint save killed half-way
    (tmp_path / f".ck.tmp-{pid}" / "model.safetensors").write_bytes(b"half")
    (tmp_path / f"checkpoint.tmp-{pid}").mkdir()  # the name older versions used
    (tmp_path / f".a.json.tmp-{pid}").write_text("half")
    (tmp_path / f".b.json.tmp-{os.getppid()}").write_text("a live writer's")  # kept
    (tmp_path / "keep.json").write_text("{}")
    with atomic.atomic_dir(tmp_path / "ck") as tmp:  # a new save removes what the killed one left
        (tmp / "w").write_text("1")
    assert sorted(os.listdir(tmp_path)) == sorted([f".b.json.tmp-{os.getppid()}", "ck", "keep.json"])


HOLD = """
import sys, time
from respaths.io.atomic import output_lock
with output_lock(sys.argv[1], "OUT"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_output_lock_refuses_a_second_run_and_dies_with_its_holder(tmp_path):
    lock = tmp_path / ".respaths.lock"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match="another respaths run is writing to OUT"):
            with atomic.output_lock(lock, "OUT"):
                pass
    finally:
        holder.kill()  # kill -9: the kernel drops its lock
        holder.wait()
    assert lock.exists()  # left behind by the killed holder, but not locked
    with atomic.output_lock(lock, "OUT"):
        pass
    assert not lock.exists()  # a run that ends removes its lock file


def test_atomic_path_for_writers_that_want_a_path(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file
    t = {"w": torch.arange(6.0).reshape(2, 3)}
    with atomic.atomic_path(tmp_path / "m.safetensors") as tmp:
        save_file(t, tmp)
    with atomic.atomic_path(tmp_path / "s.pt") as tmp:
        torch.save(t, tmp)
    assert torch.equal(load_file(tmp_path / "m.safetensors")["w"], t["w"])
    assert torch.equal(torch.load(tmp_path / "s.pt", weights_only=True)["w"], t["w"])
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "s.pt"]


def test_train_removes_what_a_killed_checkpoint_save_left(tmp_path):
    """A kill -9 during a checkpoint save leaves its temporary directory; the next run removes it."""
    from respaths.cli import main
    out = tmp_path / "run"
    pid = dead_pid()
    for name in (f".checkpoint.tmp-{pid}", f"checkpoint.tmp-{pid}"):  # ours, and older versions' name
        (out / name).mkdir(parents=True)
        (out / name / "model.safetensors").write_bytes(b"half")
    assert main(["train", "--model", "resnet8", "--dataset", "synthetic", "--width", "0.25", "--epochs", "1",
                 "--limit-train", "32", "--limit-test", "16", "--batch-size", "16", "--device", "cpu",
                 "--quiet", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["checkpoint", "metrics.csv", "run.json"]
