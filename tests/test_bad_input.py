"""Bad input: exit 2, one line on stderr, no traceback, --out untouched. A bug: traceback, exit 1."""
import os
import pickle

import pytest

from respaths import cli

LESION = ["--model", "respaths:resnet20", "--dataset", "synthetic", "--limit", "8"]


class Evil:  # unpickling this would create the marker file
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def files(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "trunc.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"w\": {\"dtype\"")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(Evil(str(tmp_path / "MARKER")), f)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "run.json").write_text("{not json")


CASES = {
    "train-bs0": ["train", "--model", "resnet8", "--dataset", "synthetic", "--batch-size", "0"],
    "train-bs-neg": ["train", "--model", "resnet8", "--dataset", "synthetic", "--batch-size", "-5"],
    "train-epochs0": ["train", "--model", "resnet8", "--dataset", "synthetic", "--epochs", "0"],
    "train-threads-neg": ["train", "--model", "resnet8", "--dataset", "synthetic", "--threads", "-1"],
    "train-threads0": ["train", "--model", "resnet8", "--dataset", "synthetic", "--threads", "0"],
    "train-device-bogus": ["train", "--model", "resnet8", "--dataset", "synthetic", "--device", "bogus"],
    "train-eval-every0": ["train", "--model", "resnet8", "--dataset", "synthetic", "--eval-every", "0"],
    "train-limit-train-a": ["train", "--model", "resnet8", "--dataset", "synthetic", "--limit-train", "a"],
    "train-unknown-model": ["train", "--model", "resnet9", "--dataset", "synthetic", "--epochs", "1"],
    "evaluate-bs-neg": ["evaluate", "{tmp}/nothing", "--batch-size", "-5"],
    "evaluate-limit0": ["evaluate", "{tmp}/nothing", "--limit", "0"],
    "evaluate-device": ["evaluate", "{tmp}/nothing", "--device", "tpu"],
    "lesion-chunk0": ["lesion", *LESION, "--chunk", "0"],
    "lesion-samples0": ["lesion", *LESION, "--mode", "random", "--samples", "0"],
    "lesion-k-falling": ["lesion", *LESION, "--mode", "random", "--k", "5-1"],
    "lesion-k-open": ["lesion", *LESION, "--mode", "random", "--k", "2-"],
    "lesion-k-empty": ["lesion", *LESION, "--mode", "random", "--k", ""],
    "lesion-k-letter": ["lesion", *LESION, "--mode", "random", "--k", "a"],
    "lesion-k-too-big": ["lesion", *LESION, "--mode", "random", "--k", "100"],
    "lesion-cache0": ["lesion", *LESION, "--cache-mb", "0"],
    "lesion-classes0": ["lesion", *LESION, "--num-classes", "0"],
    "lesion-bs0": ["lesion", *LESION, "--batch-size", "0"],
    "lesion-limit-neg": ["lesion", "--model", "respaths:resnet20", "--dataset", "synthetic", "--limit", "-3"],
    "lesion-device": ["lesion", *LESION, "--device", "cuda:x"],
    "lesion-neither": ["lesion", "--dataset", "synthetic"],
    "lesion-weights-no-model": ["lesion", "{tmp}/ck", "--weights", "{tmp}/empty.safetensors"],
    "lesion-evil-pickle": ["lesion", *LESION, "--weights", "{tmp}/evil.pt"],
    "lesion-empty-safetensors": ["lesion", *LESION, "--weights", "{tmp}/empty.safetensors"],
    "lesion-trunc-safetensors": ["lesion", *LESION, "--weights", "{tmp}/trunc.safetensors"],
    "lesion-missing-weights": ["lesion", *LESION, "--weights", "{tmp}/none.safetensors"],
    "reorder-k-falling": ["reorder", *LESION, "--k", "3-2"],
    "reorder-samples-neg": ["reorder", *LESION, "--samples", "-1"],
    "reorder-chunk-neg": ["reorder", *LESION, "--chunk", "-2"],
    "paths-share0": ["paths", "{tmp}/nothing", "--share", "0"],
    "paths-share1": ["paths", "{tmp}/nothing", "--share", "1"],
    "paths-share-nan": ["paths", "{tmp}/nothing", "--share", "nan"],
    "paths-chunk-neg": ["paths", "{tmp}/nothing", "--chunk", "-2"],
    "paths-samples0": ["paths", "{tmp}/nothing", "--samples", "0"],
    "paths-batches0": ["paths", "{tmp}/nothing", "--batches", "0"],
    "paths-lengths-falling": ["paths", "{tmp}/nothing", "--lengths", "9-3"],
    "paths-lengths-letter": ["paths", "{tmp}/nothing", "--lengths", "x"],
    "reproduce-device-bogus": ["reproduce", "--device", "bogus"],
    "reproduce-preset": ["reproduce", "--preset", "nope"],
    "report-missing": ["report", "{tmp}/nothing"],
    "layers-seq-len0": ["layers", "{tmp}/nothing", "--method", "influence", "--seq-len", "0"],
    "layers-seeds0": ["layers", "{tmp}/nothing", "--method", "greedy", "--seeds", "0"],
    "layers-spans": ["layers", "{tmp}/nothing", "--method", "painters", "--spans", "4-1"],
    "layers-method": ["layers", "{tmp}/nothing", "--method", "nope"],
    "demo-out-through-file": ["demo", "--out", "{tmp}/afile/sub"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RESPATHS_DEBUG", raising=False)
    files(tmp_path)
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in CASES[name]]
    if argv[0] in ("lesion", "reorder", "paths", "reproduce", "train") and "--out" not in argv:
        argv += ["--out", str(out)]
    before = sorted(os.listdir(tmp_path))
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert lines and "error:" in lines[-1], err
    # argparse prints a usage block first; everything else is one line
    if not lines[0].startswith("usage:"):
        assert len(lines) == 1, err
    assert not (tmp_path / "MARKER").exists()
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == before


def test_a_bug_shows_its_traceback(monkeypatch):
    """A KeyError inside the library is a defect, not bad input: it propagates (exit 1 with a traceback)."""
    import respaths.reproduce as reproduce

    def broken(*a, **k):
        raise KeyError("x")
    monkeypatch.setattr(reproduce, "reproduce", broken)
    with pytest.raises(KeyError):
        cli.main(["reproduce", "--device", "cpu", "--out", "/nonexistent-respaths-test"])
