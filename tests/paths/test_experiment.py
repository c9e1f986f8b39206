"""`respaths paths` (respaths.paths.experiment): its result file, resume, and resume after kill -9."""
import json

import pytest
import torch

import respaths


# ---------------------------------------------------------------------------------------------
# 6. the command

def test_cli_paths_writes_and_resumes(tmp_path, capsys):
    from respaths.io.checkpoint import save_checkpoint
    from respaths.cli import main
    m = respaths.build_model("resnet14", in_channels=3, num_classes=10, width=0.25)
    save_checkpoint(tmp_path / "ck", m, {"dataset": {"name": "synthetic"}})
    args = ["paths", str(tmp_path / "ck"), "--samples", "4", "--batch-size", "8", "--batches", "2",
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(args + ["--lengths", "0-2"]) == 0
    assert main(args + ["--lengths", "0-6"]) == 0  # resumes: 0-2 are kept, 3-6 added
    doc = json.loads((tmp_path / "out" / "paths.json").read_text())
    assert [r["length"] for r in doc["records"]] == list(range(7))
    assert doc["meta"]["samples"] == 4 and doc["meta"]["n_images"] == 16 and doc["blocks"] == 6
    lo, hi = doc["effective"]["lengths"]
    assert 0 <= lo <= hi <= 6 and doc["effective"]["gradient_share"] >= 0.9
    csv = (tmp_path / "out" / "paths.csv").read_text().splitlines()
    assert len(csv) == 8 and "ci_low" in csv[0] and "total" in csv[0]
    first = (tmp_path / "out" / "paths.json").read_text()
    assert main(args) == 0 and main(args + ["--lengths", "0-6"]) == 0  # all done: the same file
    assert (tmp_path / "out" / "paths.json").read_text() == first
    out = capsys.readouterr().out
    assert "carry" in out and "paths.json" in out
    # a fresh run of some of the lengths gives the same numbers (seconds aside)
    assert main(args[:-4] + ["--out", str(tmp_path / "again"), "--lengths", "2,5", "--device", "cpu"]) == 0
    again = json.loads((tmp_path / "again" / "paths.json").read_text())["records"]
    for r in again:
        same = doc["records"][r["length"]]
        assert {k: v for k, v in r.items() if k != "seconds"} == {k: v for k, v in same.items() if k != "seconds"}
    # --fast: the same numbers to rounding, recorded as such, in its own file
    assert main(args[:-4] + ["--out", str(tmp_path / "fast"), "--lengths", "2,5", "--device", "cpu", "--fast"]) == 0
    fast = json.loads((tmp_path / "fast" / "paths.json").read_text())
    assert fast["meta"]["fast"] is True and "fast" not in doc["meta"]
    for r in fast["records"]:
        assert r["mean"] == pytest.approx(doc["records"][r["length"]]["mean"], rel=1e-4)
    assert main(args[:-4] + ["--out", str(tmp_path / "fast"), "--lengths", "2,5", "--device", "cpu"]) == 2
    assert main(args + ["--samples", "5"]) == 2  # another experiment in the same place
    assert main(args + ["--lengths", "0-9"]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "out of range" in err and "Traceback" not in err


def test_kill_minus_9_then_resume_gives_the_same_file(tmp_path):
    """kill -9 `respaths paths` after a few lengths; the same command again finishes the journal to the
    file an uninterrupted run writes (seconds aside), keeping the lengths measured before the kill."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from respaths.io.checkpoint import save_checkpoint
    from respaths.cli import main
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ck", respaths.build_model("resnet32", in_channels=3, num_classes=10, width=0.25),
                    {"dataset": {"name": "synthetic"}})
    args = ["paths", str(tmp_path / "ck"), "--samples", "20", "--batch-size", "16", "--batches", "2",
            "--chunk", "4", "--device", "cpu", "--no-progress"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RESPATHS_NO_DOWNLOAD": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "respaths.cli", *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = killed / "paths.partial.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 4:  # header and 3 lengths
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "paths.json").exists()
    kept = {json.loads(l)["key"]: json.loads(l) for l in journal.read_text().splitlines()[1:] if l.endswith("}")}
    assert 3 <= len(kept) < 16

    assert main([*args, "--out", str(killed)]) == 0  # resume
    whole = tmp_path / "whole"
    assert main([*args, "--out", str(whole)]) == 0  # the same command, never interrupted
    resumed = json.loads((killed / "paths.json").read_text())
    for r in resumed["records"]:
        if r["key"] in kept:
            assert r == kept[r["key"]]  # measured before the kill: kept, not measured again
    assert len(resumed["records"]) == 16 and not journal.exists()

    def without_seconds(path):
        doc = json.loads(path.read_text())
        for r in doc["records"]:
            r.pop("seconds", None)
        return doc
    assert without_seconds(killed / "paths.json") == without_seconds(whole / "paths.json")
    assert not [p for p in killed.iterdir() if ".tmp" in p.name or p.name.endswith(".lock")]
