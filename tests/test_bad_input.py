"""Bad input: exit 2, one line on stderr, no traceback, --out untouched. A bug: traceback, exit 1."""
import errno
import os
import pickle

import pytest

from respaths import cli

LESION = ["--model", "respaths:resnet20", "--dataset", "synthetic", "--limit", "8"]
TRAIN = ["--model", "resnet8", "--dataset", "synthetic", "--epochs", "1", "--limit-train", "8", "--limit-test", "8"]
TRAIN_RUN = [*TRAIN, "--out", "{tmp}/run"]  # a train run that is there (see files)


class Evil:  # unpickling this would create the marker file
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def checkpoint(path, in_channels=3, meta=None):
    """A tiny respaths checkpoint (resnet8) that says it was trained on synthetic images."""
    import torch

    from respaths.io.checkpoint import save_checkpoint
    from respaths.models import build_model
    torch.manual_seed(0)
    save_checkpoint(path, build_model("resnet8", in_channels=in_channels, width=0.25),
                    meta or {"dataset": {"name": "synthetic"}, "epoch": 1})


def files(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "trunc.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"w\": {\"dtype\"")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(Evil(str(tmp_path / "MARKER")), f)
    (tmp_path / "afile").write_text("x")
    from safetensors.torch import save_file
    from respaths.models import build_model
    save_file(build_model("vgg15", width=0.125).state_dict(), tmp_path / "vgg.safetensors")  # not a resnet's
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "run.json").write_text("{not json")
    (tmp_path / "adir").mkdir()
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")  # a Hugging Face directory, as far as the options look
    # foreign run records: JSON, but not what reproduce writes
    for name, text in {"preset-list": '{"preset": [1, 2], "steps": {}}', "run-list": "[1, 2]",
                       "preset-number": '{"dataset": {"name": "synthetic"}, "preset": 3, "steps": {}}'}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(text)
    # checkpoints: a good one, a 1-channel one, and ones whose meta.json is damaged or foreign
    checkpoint(tmp_path / "ck3")
    checkpoint(tmp_path / "ck1", in_channels=1)
    for name, text in {"meta-list": "[1, 2]", "meta-cut": '{"format": "respaths-checkpoint/1", "mo',
                       "meta-string": '"resnet8"'}.items():
        checkpoint(tmp_path / name)
        (tmp_path / name / "meta.json").write_text(text)
    checkpoint(tmp_path / "run-train-list" / "checkpoint", meta={"dataset": {"name": "synthetic"}, "train": [1]})
    # result files in an --out: journals with a bad header, finished files of another kind
    for name, (file, text) in {
            "journal-garbage": ("lesion-single.partial.jsonl", "garbage\n"),
            "journal-list": ("lesion-single.partial.jsonl", "[1, 2]\n"),
            "journal-no-header": ("lesion-single.partial.jsonl", '{"sch'),
            "journal-other-schema": ("lesion-single.partial.jsonl", '{"schema": "x/1", "meta": {}}\n'),
            "result-list": ("lesion-single.json", "[]"),
            "result-cut": ("lesion-single.json", '{"schema": "respaths.io.results/1", "me'),
            "result-binary": ("lesion-single.json", "\udcff\udcfe"),
            "csv-of-the-user": ("lesion-single.csv", "name,score\nme,1\n"),
            "paths-result-string": ("paths.json", '"x"')}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / file).write_bytes(text.encode("utf-8", "surrogateescape"))
    # runs of each kind, as respaths writes them: a train run, a study run, a demo (reproduce quick) run
    checkpoint(tmp_path / "run" / "checkpoint", meta={"dataset": {"name": "synthetic"}, "epoch": 1,
                                                      "train": {"model": "resnet8", "dataset": "synthetic"}})
    (tmp_path / "run" / "run.json").write_text('{"settings": {"model": "resnet8"}}\n')
    (tmp_path / "run" / "metrics.csv").write_text("epoch,test_error\n1,0.5\n")
    (tmp_path / "studyrun" / "results").mkdir(parents=True)
    (tmp_path / "studyrun" / "figures").mkdir()
    (tmp_path / "studyrun" / "run.json").write_text('{"schema": "respaths.run/1", "preset": {"name": "study-quick"}, '
                                                    '"steps": {}, "models": {}, "kind": "study"}')
    (tmp_path / "studyrun" / "results" / "lesion-single.json").write_text("{}")
    (tmp_path / "studyrun" / "figures" / "fig3.png").write_bytes(b"png")
    (tmp_path / "demorun").mkdir()
    (tmp_path / "demorun" / "run.json").write_text('{"schema": "respaths.run/1", "preset": {"name": "quick"}, '
                                                   '"steps": {}, "models": {}}')
    # directories respaths did not write: a checkpoint that is a file, a run.json of someone else's
    (tmp_path / "ckfile").mkdir()
    (tmp_path / "ckfile" / "checkpoint").write_text("my notes")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "run.json").write_text('{"mine": true}')
    (tmp_path / "foreign" / "results").mkdir()
    # an image folder with an empty class folder
    from PIL import Image
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "imgs" / "a" / "x.png")


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
    "lesion-wrong-architecture": ["lesion", *LESION, "--weights", "{tmp}/vgg.safetensors"],
    "study-wrong-architecture": ["study", "respaths:resnet20", "--dataset", "synthetic", "--weights",
                                 "{tmp}/vgg.safetensors", "--out", "{tmp}/out"],
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
    "prune-out-of-range": ["prune", "respaths:resnet8", "--blocks", "7", "--out", "{tmp}/out"],
    "prune-every-block": ["prune", "respaths:resnet8", "--blocks", "0,1,2", "--out", "{tmp}/out"],
    "prune-plain-layer": ["prune", "respaths:plain20", "--dataset", "synthetic", "--limit", "4", "--blocks", "3",
                          "--out", "{tmp}/out"],
    "prune-no-such-name": ["prune", "respaths:resnet8", "--blocks", "layer9.0", "--out", "{tmp}/out"],
    "prune-remove-alone": ["prune", "respaths:resnet8", "--blocks", "1", "--remove", "2", "--out", "{tmp}/out"],
    "prune-from-not-json": ["prune", "respaths:resnet8", "--from", "{tmp}/afile", "--remove", "1", "--out", "{tmp}/out"],
    "prune-remove0": ["prune", "respaths:resnet8", "--from", "{tmp}/afile", "--remove", "0", "--out", "{tmp}/out"],
    "prune-both": ["prune", "respaths:resnet8", "--blocks", "1", "--from", "{tmp}/afile", "--out", "{tmp}/out"],
    "prune-out-not-empty": ["prune", "respaths:resnet8", "--blocks", "1", "--out", "{tmp}/damaged"],
    "study-compare-bad": ["study", "respaths:resnet8", "--dataset", "synthetic", "--compare", "x", "--out", "{tmp}/out"],
    "study-budget": ["study", "respaths:resnet8", "--dataset", "synthetic", "--budget", "huge", "--out", "{tmp}/out"],
    "study-plain-net": ["study", "respaths:plain20", "--dataset", "synthetic", "--out", "{tmp}/out"],
    "evaluate-spec-no-dataset": ["evaluate", "--model", "respaths:resnet8"],
    "lesion-image-size": ["lesion", *LESION, "--image-size", "30,32"],
    # damaged or foreign files: one sentence naming the file
    "reproduce-run-json-cut": ["reproduce", "--preset", "tiny", "--device", "cpu", "--out", "{tmp}/damaged"],
    "reproduce-run-json-list": ["reproduce", "--preset", "tiny", "--device", "cpu", "--out", "{tmp}/run-list"],
    "reproduce-preset-list": ["reproduce", "--preset", "tiny", "--device", "cpu", "--out", "{tmp}/preset-list"],
    "report-run-json-cut": ["report", "{tmp}/damaged"],
    "report-preset-number": ["report", "{tmp}/preset-number"],
    "report-run-list": ["report", "{tmp}/run-list"],
    "report-out-is-dir": ["report", "{tmp}/damaged", "--out", "{tmp}/adir"],
    "evaluate-meta-list": ["evaluate", "{tmp}/meta-list"],
    "evaluate-meta-cut": ["evaluate", "{tmp}/meta-cut"],
    "evaluate-meta-string": ["evaluate", "{tmp}/meta-string"],
    "lesion-meta-list": ["lesion", "{tmp}/meta-list"],
    "paths-meta-string": ["paths", "{tmp}/meta-string"],
    "train-meta-train-list": ["train", "--model", "resnet8", "--dataset", "synthetic", "--out", "{tmp}/run-train-list"],
    "train-resume-meta-train-list": ["train", "--resume", "--out", "{tmp}/run-train-list"],
    "lesion-journal-garbage": ["lesion", "{tmp}/ck3", "--out", "{tmp}/journal-garbage"],
    "lesion-journal-list": ["lesion", "{tmp}/ck3", "--out", "{tmp}/journal-list"],
    "lesion-journal-no-header": ["lesion", "{tmp}/ck3", "--out", "{tmp}/journal-no-header"],
    "lesion-journal-other-schema": ["lesion", "{tmp}/ck3", "--out", "{tmp}/journal-other-schema"],
    "lesion-result-list": ["lesion", "{tmp}/ck3", "--out", "{tmp}/result-list"],
    "lesion-result-cut": ["lesion", "{tmp}/ck3", "--out", "{tmp}/result-cut"],
    "lesion-result-binary": ["lesion", "{tmp}/ck3", "--out", "{tmp}/result-binary"],
    "paths-result-string": ["paths", "{tmp}/ck3", "--samples", "2", "--batches", "1", "--batch-size", "4",
                            "--device", "cpu", "--out", "{tmp}/paths-result-string"],
    # combinations checked before any work
    "lesion-channels": ["lesion", "{tmp}/ck1", "--dataset", "synthetic"],
    "reorder-channels": ["reorder", "{tmp}/ck1", "--dataset", "synthetic"],
    "paths-channels": ["paths", "{tmp}/ck1", "--dataset", "synthetic", "--device", "cpu"],
    "paths-share-real-checkpoint": ["paths", "{tmp}/ck3", "--share", "1.5"],
    "lesion-nested-new-out": ["lesion", "{tmp}/ck1", "--dataset", "synthetic", "--out", "{tmp}/new/deeper/out"],
    "train-no-images": ["train", "--model", "resnet8", "--dataset", "imagefolder:{tmp}/adir", "--epochs", "1"],
    "lesion-empty-class-folder": ["lesion", "--model", "respaths:resnet20", "--dataset", "imagefolder:{tmp}/imgs"],
    # issue 25, data loss: every option is checked before --force deletes anything
    "train-force-p-l-2": ["train", *TRAIN_RUN, "--force", "--stochastic-depth", "2"],
    "train-force-width-nan": ["train", *TRAIN_RUN, "--force", "--width", "nan"],
    "train-force-momentum-neg": ["train", *TRAIN_RUN, "--force", "--momentum", "-1"],
    "train-force-fixed-m-too-many": ["train", *TRAIN_RUN, "--force", "--fixed-m", "50"],  # refused by the model
    "demo-over-study": ["demo", "--out", "{tmp}/studyrun"],
    "demo-over-train": ["demo", "--out", "{tmp}/run"],
    "demo-over-foreign": ["demo", "--out", "{tmp}/foreign"],
    "reproduce-over-study": ["reproduce", "--preset", "tiny", "--device", "cpu", "--out", "{tmp}/studyrun"],
    "reproduce-force-over-foreign": ["reproduce", "--preset", "tiny", "--force", "--out", "{tmp}/foreign"],
    "study-over-demo": ["study", "respaths:resnet8", "--dataset", "synthetic", "--out", "{tmp}/demorun"],
    "train-over-study": ["train", "--model", "resnet8", "--dataset", "synthetic", "--out", "{tmp}/studyrun"],
    "train-checkpoint-is-a-file": ["train", "--model", "resnet8", "--dataset", "synthetic", "--out", "{tmp}/ckfile"],
    "train-force-checkpoint-is-a-file": ["train", "--model", "resnet8", "--dataset", "synthetic", "--force",
                                         "--out", "{tmp}/ckfile"],
    "train-resume-force": ["train", *TRAIN_RUN, "--resume", "--force"],
    "lesion-force-over-foreign-result": ["lesion", "{tmp}/ck3", "--force", "--out", "{tmp}/result-list"],
    "lesion-over-a-users-csv": ["lesion", "{tmp}/ck3", "--out", "{tmp}/csv-of-the-user"],
    "lesion-force-over-foreign-journal": ["lesion", "{tmp}/ck3", "--force", "--out", "{tmp}/journal-garbage"],
    # numbers Python or torch cannot hold, or that can only give nonsense
    "train-lr-huge": ["train", *TRAIN, "--lr", "1e300"],
    "train-lr-inf": ["train", *TRAIN, "--lr", "inf"],
    "train-lr-word": ["train", *TRAIN, "--lr", "abc"],
    "train-width-inf": ["train", *TRAIN, "--width", "inf"],
    "train-width-huge": ["train", *TRAIN, "--width", "1e6"],
    "train-seed-huge": ["train", *TRAIN, "--seed", "99999999999999999999999"],
    "train-threads-huge": ["train", *TRAIN, "--threads", "99999999999"],
    "train-momentum-nan": ["train", *TRAIN, "--momentum", "nan"],
    "train-momentum-5": ["train", *TRAIN, "--momentum", "5"],
    "train-weight-decay-neg": ["train", *TRAIN, "--weight-decay", "-1"],
    "train-weight-decay-nan": ["train", *TRAIN, "--weight-decay", "nan"],
    "train-weight-decay-inf": ["train", *TRAIN, "--weight-decay", "inf"],
    "lesion-seed-neg": ["lesion", *LESION, "--seed", "-5"],
    "reorder-seed-neg": ["reorder", *LESION, "--seed", "-5"],
    "paths-seed-neg": ["paths", "{tmp}/ck3", "--seed", "-5"],
    "study-seed-neg": ["study", "respaths:resnet8", "--dataset", "synthetic", "--seed", "-5", "--out", "{tmp}/out"],
    "lesion-model-kwargs-unknown": ["lesion", *LESION, "--model-kwargs", "foo=1"],
    "lesion-model-kwargs-nan": ["lesion", *LESION, "--model-kwargs", "width=nan"],
    "lesion-k-twice": ["lesion", *LESION, "--mode", "random", "--k", "3,3"],
    "prune-blocks-empty": ["prune", "respaths:resnet8", "--blocks", "", "--out", "{tmp}/out"],
    "evaluate-mean-nan": ["evaluate", "--model", "respaths:resnet8", "--dataset", "synthetic", "--limit", "4",
                          "--mean", "nan,nan,nan", "--std", "1,1,1"],
    "evaluate-std-zero": ["evaluate", "{tmp}/ck3", "--mean", "0.5", "--std", "0"],
    "lesion-data-dir-missing": ["lesion", *LESION, "--data-dir", "{tmp}/no-such-dir"],
    "lesion-data-dir-file": ["lesion", *LESION, "--data-dir", "{tmp}/afile"],
    "train-out-empty": ["train", *TRAIN, "--out", ""],
    "lesion-out-empty": ["lesion", *LESION, "--out", ""],
    "layers-variants-comma": ["layers", "{tmp}/hf", "--method", "painters", "--variants", ","],
    "layers-out-dir": ["layers", "{tmp}/hf", "--method", "influence", "--out", "{tmp}/adir/"],
    "layers-missing-dir": ["layers", "{tmp}/nothing", "--method", "influence", "--text", "{tmp}/afile"],
    "lesion-weights-dir": ["lesion", *LESION, "--weights", "{tmp}/adir"],
    "paths-lengths-0": ["paths", "{tmp}/ck3", "--lengths", "0"],
    "paths-lengths-one": ["paths", "{tmp}/ck3", "--lengths", "3"],
    # options that do nothing for this model, mode or launch
    "lesion-image-size-cifar": ["lesion", "--model", "respaths:resnet8", "--dataset", "cifar10", "--image-size", "32"],
    "lesion-seq-len-image-model": ["lesion", *LESION, "--seq-len", "64"],
    "lesion-k-single": ["lesion", *LESION, "--k", "3"],
    "lesion-samples-single": ["lesion", *LESION, "--mode", "single", "--samples", "3"],
    "layers-spans-influence": ["layers", "{tmp}/hf", "--method", "influence", "--spans", "1,2"],
    "layers-token-greedy": ["layers", "{tmp}/hf", "--method", "greedy", "--token", "first"],
    "train-sync-bn-one-process": ["train", *TRAIN, "--sync-bn"],
    "lesion-image-size-checkpoint": ["lesion", "{tmp}/ck3", "--limit", "8", "--image-size", "40,32"],  # synthetic's
    "prune-image-size-checkpoint": ["prune", "{tmp}/ck3", "--blocks", "1", "--image-size", "40,32", "--out", "{tmp}/out"],
    "prune-image-size-no-images": ["prune", "respaths:resnet8", "--blocks", "1", "--image-size", "40,32",
                                   "--out", "{tmp}/out"],
    "prune-text-image-model": ["prune", "respaths:resnet8", "--blocks", "1", "--text", "{tmp}/afile", "--out", "{tmp}/out"],
    # issue 27: the model once, no abbreviations, layers on an image model
    "lesion-model-twice": ["lesion", "{tmp}/ck3", "--model", "respaths:resnet8"],
    "lesion-abbreviated-option": ["lesion", "--mod", "respaths:resnet8", "--dataset", "synthetic"],
    "study-model-kwargs-abbreviated": ["study", "--model-kw", "a=1", "respaths:resnet8", "--out", "{tmp}/out"],
    "layers-image-model": ["layers", "{tmp}/ck3", "--method", "influence", "--text", "{tmp}/afile"],
    "layers-image-spec": ["layers", "--model", "respaths:resnet8", "--method", "influence"],
}


def snapshot(root):
    """Every file (with its bytes) and folder under root."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RESPATHS_DEBUG", raising=False)
    files(tmp_path)
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in CASES[name]]
    if argv[0] in ("lesion", "reorder", "paths", "reproduce", "train") and "--out" not in argv:
        argv += ["--out", str(out)]
    before = snapshot(tmp_path)
    rc_from_argparse = False
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse
        rc, rc_from_argparse = e.code, True
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and "error:" in lines[0], err  # one line, argparse's errors too (no usage block)
    if rc_from_argparse:
        assert f"see respaths {argv[0]} --help" in lines[0], err
    assert not (tmp_path / "MARKER").exists()
    assert not out.exists()
    assert snapshot(tmp_path) == before  # every file and folder as it was, byte for byte


def test_a_bug_shows_its_traceback(monkeypatch):
    """A KeyError inside the library is a defect, not bad input: it propagates (exit 1 with a traceback)."""
    import respaths.study.reproduce as reproduce

    def broken(*a, **k):
        raise KeyError("x")
    monkeypatch.setattr(reproduce, "reproduce", broken)
    with pytest.raises(KeyError):
        cli.main(["reproduce", "--device", "cpu", "--out", "/nonexistent-respaths-test"])


def run_cli(argv, capsys):
    """(exit status, the non-empty lines on stderr) of respaths ARGV run in this process."""
    capsys.readouterr()
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def lesion_argv(tmp_path, out):
    return ["lesion", tmp_path / "ck3", "--limit", "8", "--batch-size", "4", "--out", out]


def test_a_second_run_into_the_same_out_stops_at_once(tmp_path, capsys):
    import fcntl
    checkpoint(tmp_path / "ck3")
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / ".respaths.lock", os.O_RDWR | os.O_CREAT)  # another run holds the lock
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        before = snapshot(out)
        rc, err = run_cli(lesion_argv(tmp_path, out), capsys)
        assert rc == 2 and len(err) == 1 and "Traceback" not in "".join(err)
        assert f"another respaths run is writing to {out}" in err[0]
        assert snapshot(out) == before
    finally:
        os.close(fd)  # the holder ends: its lock goes with it, the stale file takes nothing
    rc, err = run_cli(lesion_argv(tmp_path, out), capsys)
    assert rc == 0 and (out / "lesion-single.json").exists()
    assert not (out / ".respaths.lock").exists()  # a finished run leaves no lock file


def test_layers_locks_its_prefix_not_the_directory(tmp_path):
    from respaths.io.atomic import output_lock
    with output_lock(tmp_path / ".exp.respaths.lock", tmp_path / "exp"):
        args = cli._output(cli.argparse.Namespace(command="layers", out=str(tmp_path / "exp"), method="influence"))
        assert args == (str(tmp_path / "exp"), tmp_path, tmp_path / ".exp.respaths.lock")
        other = cli._output(cli.argparse.Namespace(command="layers", out=str(tmp_path / "other"), method="angular"))
        with output_lock(other[2], other[0]):  # another prefix in the same directory is free
            pass


def no_tmp(root):
    return [p for p in root.rglob("*") if ".tmp" in p.name]


REAL_REPLACE = os.replace


def enospc(only=None):
    """os.replace as on a full disk (for targets ending in `only`, or all)."""
    def replace(src, dst, *a, **k):
        if only is None or str(dst).endswith(only):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return REAL_REPLACE(src, dst, *a, **k)
    return replace


def test_a_full_disk_leaves_no_tmp_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RESPATHS_DEBUG", raising=False)
    checkpoint(tmp_path / "ck3")
    # the disk is full from the first record on: nothing of the run stays, not even its --out
    out = tmp_path / "full"
    monkeypatch.setattr(os, "replace", enospc())
    rc, err = run_cli(lesion_argv(tmp_path, out), capsys)
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert not out.exists() and not no_tmp(tmp_path)
    # full when the finished files are written: the journal keeps the work, no JSON without its CSV
    monkeypatch.setattr(os, "replace", enospc(only=".json"))
    rc, err = run_cli(lesion_argv(tmp_path, out), capsys)
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert sorted(p.name for p in out.iterdir()) == ["lesion-single.partial.jsonl"] and not no_tmp(tmp_path)
    # space again: the same command finishes from the journal, to what an undisturbed run writes
    monkeypatch.undo()
    assert run_cli(lesion_argv(tmp_path, out), capsys)[0] == 0
    assert run_cli(lesion_argv(tmp_path, tmp_path / "clean"), capsys)[0] == 0
    import json

    def without_seconds(d):
        doc = json.loads((d / "lesion-single.json").read_text())
        return [{k: v for k, v in r.items() if k != "seconds"} for r in doc["records"]], doc["meta"]
    assert without_seconds(out) == without_seconds(tmp_path / "clean")
    assert (out / "lesion-single.csv").exists() and not no_tmp(tmp_path)


def make_read_only(path):
    """Make the folder path unwritable (for root, which ignores permissions, immutable); returns the undo."""
    import shutil
    import subprocess
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root, and this file system cannot make a folder immutable")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_out(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RESPATHS_DEBUG", raising=False)
    checkpoint(tmp_path / "ck3")
    out = tmp_path / "ro"
    out.mkdir()
    undo = make_read_only(out)
    try:
        rc, err = run_cli(lesion_argv(tmp_path, out), capsys)
        assert rc == 2 and len(err) == 1 and str(out) in err[0] and "Traceback" not in err[0], err
        assert "Permission denied" in err[0] or "Operation not permitted" in err[0], err
        assert list(out.iterdir()) == []
    finally:
        undo()


def test_layers_on_an_empty_text_file(tmp_path, capsys, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    import torch
    from tokenizers import Tokenizer, models as tm, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    monkeypatch.delenv("RESPATHS_DEBUG", raising=False)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=16, n_layer=2, n_head=2, n_positions=32))
    tok = Tokenizer(tm.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["a b c"], trainers.WordLevelTrainer(vocab_size=32, special_tokens=["[PAD]", "[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "empty.txt").write_text("")
    before = snapshot(tmp_path)
    rc, err = run_cli(["layers", tmp_path / "m", "--method", "influence", "--text", tmp_path / "empty.txt",
                       "--out", tmp_path / "runs" / "x"], capsys)
    assert rc == 2 and len(err) == 1 and "too little text" in err[0], err
    assert snapshot(tmp_path) == before


def test_damaged_records_in_a_journal(tmp_path):
    from respaths.io.results import ResultStore
    from respaths.core import UserError
    store = ResultStore(tmp_path / "exp", {"m": 1})
    assert not list(tmp_path.iterdir())  # opening writes nothing
    store.append({"key": "a", "error": 0.5})
    lines = store.journal.read_text().splitlines()
    assert len(lines) == 2  # the header came with the first record
    for bad in ("[1]", '{"error": 0.5}', '{"key": 3}'):
        store.journal.write_text(lines[0] + "\n" + bad + "\n")
        with pytest.raises(UserError, match="line 2 is not a result record"):
            ResultStore(tmp_path / "exp", {"m": 1})


def test_layers_without_transformers(tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.delenv("RESPATHS_DEBUG", raising=False)
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails as if not installed
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "t.txt").write_text("some text\n")
    before = snapshot(tmp_path)
    rc, err = run_cli(["layers", tmp_path / "hf", "--method", "influence", "--text", tmp_path / "t.txt",
                       "--out", tmp_path / "runs" / "x"], capsys)
    assert rc == 2 and len(err) == 1 and "needs transformers" in err[0] and "pip install" in err[0], err
    assert snapshot(tmp_path) == before


def test_every_command_with_a_device_defaults_to_auto():
    import argparse

    from respaths.cli import COMMANDS
    with_device = []
    for name, (add_args, _, _) in COMMANDS.items():
        p = argparse.ArgumentParser()
        add_args(p)
        defaults = {a.dest: a.default for a in p._actions}
        if "device" in defaults:
            with_device.append(name)
            assert defaults["device"] == "auto", name
    assert {"train", "evaluate", "lesion", "reorder", "layers", "paths", "study", "reproduce"} <= set(with_device)


# ---------------------------------------------------------------------------------------------
# issue 25: the rest of each class, where a case needs more than a command line

def test_force_deletes_only_after_every_check_and_only_its_own_files(tmp_path, capsys):
    """--force starts a train run over only once the model builds, and deletes run files, nothing else."""
    files(tmp_path)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    argv = ["train", *[a.replace("{tmp}", str(tmp_path)) for a in TRAIN_RUN], "--force", "--no-augment"]
    assert run_cli(argv, capsys)[0] == 0
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    import json
    assert json.loads((tmp_path / "run" / "run.json").read_text())["settings"]["augment"] is False


def test_a_damaged_journal_is_refused_and_kept(tmp_path, capsys):
    """A record without its fields used to be finished into result files (and the journal deleted)
    before the summary failed with KeyError: 'kind'."""
    import json
    checkpoint(tmp_path / "ck3")
    out = tmp_path / "out"
    assert run_cli(lesion_argv(tmp_path, out) + ["--no-figure"], capsys)[0] == 0
    doc = json.loads((out / "lesion-single.json").read_text())
    records = doc["records"]
    del records[1]["kind"]
    journal = out / "lesion-single.partial.jsonl"
    journal.write_text("\n".join(json.dumps(x) for x in [{"schema": doc["schema"], "meta": doc["meta"]}, *records]) + "\n")
    for f in ("lesion-single.json", "lesion-single.csv"):
        (out / f).unlink()
    before = snapshot(tmp_path)
    rc, err = run_cli(lesion_argv(tmp_path, out) + ["--no-figure"], capsys)
    assert rc == 2 and len(err) == 1 and "is damaged (it lacks 'kind')" in err[0], err
    assert snapshot(tmp_path) == before


def test_a_damaged_paths_journal_is_refused_and_kept(tmp_path, capsys):
    import json
    checkpoint(tmp_path / "ck3")
    out = tmp_path / "out"
    argv = ["paths", tmp_path / "ck3", "--samples", "2", "--batches", "1", "--batch-size", "4", "--lengths", "0-2",
            "--device", "cpu", "--out", out, "--no-figure"]
    assert run_cli(argv, capsys)[0] == 0
    doc = json.loads((out / "paths.json").read_text())
    records = doc["records"]
    del records[1]["mean"]
    (out / "paths.partial.jsonl").write_text(
        "\n".join(json.dumps(x) for x in [{"schema": doc["schema"], "meta": doc["meta"]}, *records]) + "\n")
    for f in ("paths.json", "paths.csv"):
        (out / f).unlink()
    before = snapshot(tmp_path)
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and len(err) == 1 and "line 3 is not a result record" in err[0], err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("env", [{"RANK": "1", "WORLD_SIZE": "2"}, {"RANK": "1"}, {"WORLD_SIZE": "two"}])
def test_rank_and_world_size_without_torchrun(env, tmp_path, capsys, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    checkpoint(tmp_path / "ck3")
    before = snapshot(tmp_path)
    rc, err = run_cli(lesion_argv(tmp_path, tmp_path / "out"), capsys)
    assert rc == 2 and len(err) == 1 and "torchrun" in err[0], err
    assert snapshot(tmp_path) == before


def test_a_full_disk_in_train_and_prune_names_the_path(tmp_path, capsys, monkeypatch):
    import torch
    from safetensors import SafetensorError
    monkeypatch.delenv("RESPATHS_DEBUG", raising=False)

    def torch_short_write(*a, **k):  # what torch.save raises when the disk takes less than it writes
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    monkeypatch.setattr(torch, "save", torch_short_write)
    out = tmp_path / "run"
    rc, err = run_cli(["train", *TRAIN, "--out", out], capsys)
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0] and str(out / "checkpoint") in err[0], err
    assert not (out / "checkpoint").exists() and not no_tmp(tmp_path)

    def full(*a, **k):  # safetensors' own error on a full disk
        raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28) at path "x"')
    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    pruned = tmp_path / "pruned"
    rc, err = run_cli(["prune", "respaths:resnet8", "--blocks", "1", "--out", pruned], capsys)
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0] and str(pruned) in err[0], err
    assert not pruned.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".pruned")]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Hugging Face directories of a tiny GPT-2 (32 positions): good, with a truncated safetensors file,
    with an unknown model_type, and with a pytorch_model.bin that unpickling would run code from."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    import json
    import shutil

    import torch
    from tokenizers import Tokenizer, models as tm, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=16, n_layer=2, n_head=2, n_positions=32,
                                       bos_token_id=0, eos_token_id=0))
    tok = Tokenizer(tm.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["a b c"], trainers.WordLevelTrainer(vocab_size=32, special_tokens=["[PAD]", "[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(root / "good")
    model.save_pretrained(root / "good")
    for name in ("trunc", "type", "bin"):
        shutil.copytree(root / "good", root / name)
    weights = (root / "trunc" / "model.safetensors").read_bytes()
    (root / "trunc" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    config = json.loads((root / "type" / "config.json").read_text())
    (root / "type" / "config.json").write_text(json.dumps(dict(config, model_type="nosuchmodel")))
    (root / "bin" / "model.safetensors").unlink()
    with open(root / "bin" / "pytorch_model.bin", "wb") as f:
        pickle.dump({"w": Evil(str(root / "MARKER"))}, f)
    (root / "text.txt").write_text("a b c a b c a b c\n" * 20)
    (root / "latin1.txt").write_bytes("caf\xe9 a b c\n".encode("latin-1") * 20)
    return root


@pytest.mark.parametrize("case,expect", [
    ("trunc", "could not be read"), ("type", "cannot read"), ("bin", "could not be read"),
    ("seq-len", "longer than the 32 positions"), ("latin1", "is not UTF-8")])
def test_hugging_face_directories_that_cannot_be_read(case, expect, hf_dirs, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RESPATHS_DEBUG", raising=False)
    model = hf_dirs / ("good" if case in ("seq-len", "latin1") else case)
    text = hf_dirs / ("latin1.txt" if case == "latin1" else "text.txt")
    argv = ["lesion", model, "--text", text, "--out", tmp_path / "out"] + (["--seq-len", "64"] if case == "seq-len" else [])
    before = snapshot(hf_dirs)
    rc, err = run_cli(argv, capsys)
    err = [ln for ln in err if not ln.startswith("[transformers]")]  # the tiny config's own notes
    assert rc == 2 and len(err) == 1 and expect in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "out").exists() and not (hf_dirs / "MARKER").exists()
    assert snapshot(hf_dirs) == before


# ---------------------------------------------------------------------------------------------
# issue 25: silent statistical errors

def test_random_sets_and_reorderings_are_distinct(tmp_path, capsys):
    """resnet20 has 9 blocks: one set of 9 exists, and 5 pairs to swap (swappable_pairs)."""
    import json
    out = tmp_path / "out"
    capsys.readouterr()
    assert cli.main(["lesion", *LESION, "--mode", "random", "--k", "8,9", "--samples", "5", "--out", str(out),
                     "--no-figure"]) == 0
    assert "k=9: only 1 distinct configurations exist" in capsys.readouterr().out
    doc = json.loads((out / "lesion-random.json").read_text())
    sets = {k: [tuple(r["deleted"]) for r in doc["records"] if r["k"] == k] for k in (8, 9)}
    assert len(sets[9]) == 1 and len(sets[8]) == 5 and len(set(sets[8])) == 5
    assert doc["meta"]["params"]["configurations"][1] == {"k": 9, "asked": 5, "exist": 1, "drawn": 1}
    rc, _ = run_cli(["reorder", *LESION, "--k", "1", "--samples", "50", "--out", out, "--no-figure"], capsys)
    assert rc == 0
    doc = json.loads((out / "reorder.json").read_text())
    orders = [tuple(r["order"]) for r in doc["records"] if r["kind"] == "reorder"]
    assert len(orders) == len(set(orders)) == doc["meta"]["params"]["configurations"][0]["exist"] < 50


def test_distinct_draws_keep_the_sets_drawn_without_repeats():
    """A sample is what respaths always drew for (seed, k, sample) unless that repeats an earlier one;
    so result files of experiments without repeats stay as they were."""
    import random

    import torch

    from respaths.adapters import view
    from respaths.experiments.lesion import random_plans, reorder_plans
    from respaths.models import build_model
    v = view(build_model("resnet20", width=0.25).eval(), torch.zeros(2, 3, 32, 32))
    specs = random_plans(v, [2], 36, seed=7)  # C(9, 2) = 36: every pair once
    drawn = [tuple(sp.record["deleted"]) for sp in specs]
    assert len(set(drawn)) == 36
    old = [tuple(sorted(random.Random(f"7/delete/2/{s}").sample(v.deletable, 2))) for s in range(36)]
    first_repeat = next(i for i, d in enumerate(old) if d in old[:i])
    assert drawn[:first_repeat] == old[:first_repeat] and first_repeat > 0
    assert [sp.record for sp in random_plans(v, [2], 10, seed=7)] == [sp.record for sp in specs[:10]]
    swaps = reorder_plans(v, [2], 3, seed=1)
    assert [sp.record["swaps"] for sp in swaps] == [
        [list(p) for p in random.Random(f"1/reorder/2/{s}").sample(v.swappable_pairs(), 2)] for s in range(3)]


def test_a_statistic_of_constant_numbers_is_not_measured(tmp_path, recwarn):
    from respaths.study import claims
    from respaths.study.read import load_study
    from tests.study.synthetic_run import write_run
    study = load_study(write_run(tmp_path / "one"))
    study.random["resnet"]["mean"] = [0.0] * len(study.random["resnet"]["mean"])  # one test image: 0 or 1 only
    study.reorder["resnet"]["error"] = [1.0] * len(study.reorder["resnet"]["error"])
    found = {c.key: c for c in claims.claims(study)}
    for key in ("random", "reorder", "surviving"):
        assert found[key].verdict == claims.MISSING and found[key].measured.startswith("not measured:"), key
        assert "nan" not in found[key].measured and "undefined" in found[key].measured
    assert not [w for w in recwarn if "constant" in str(w.message).lower()]


def test_a_claim_with_too_few_points_says_why_it_is_not_measured(tmp_path):
    from respaths.study import claims
    from respaths.study.read import load_study
    from tests.study.synthetic_run import write_run
    study = load_study(write_run(tmp_path / "few"))
    r = study.random["resnet"]
    study.random["resnet"] = dict(r, k=r["k"][:2], mean=r["mean"][:2])  # a 3-block net has k = 1, 2 only
    found = {c.key: c for c in claims.claims(study)}
    assert found["random"].verdict == claims.MISSING
    assert found["random"].measured == ("not measured: only 2 values of k were measured, and the rule needs at "
                                        "least 3.")


def test_reproduce_force_deletes_only_its_own_files(tmp_path, capsys, monkeypatch):
    """reproduce --force starts over by deleting the models, results and figures respaths wrote; a
    user's files inside models/, results/ and figures/ stay as they were."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from respaths.io.layout import FIGURES
    from respaths.study import reproduce
    out = tmp_path / "run"
    result = '{"schema": "respaths.io.results/1", "meta": {}}'
    ours = [out / "models" / "resnet" / "metrics.csv", out / "models" / "resnet" / "run.json",
            out / "results" / "lesion-single.json", out / "results" / "lesion-single.csv",
            out / "results" / "compare" / "resnet-lesion-single.json", out / "results" / "layers-bi.json",
            out / "figures" / f"{FIGURES['single']}.png", out / "figures" / f"{FIGURES['paths']}.svg",
            out / "figures" / "layers-bi.png", out / "results" / "layers-bi.png"]
    checkpoint(out / "models" / "resnet" / "checkpoint")
    for p, text in zip(ours[:6], ["epoch,test_error\n1,0.5\n", '{"settings": {}}', result, "key,error\nx,1\n",
                                  result, result]):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    plots = {}
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        plt.figure().savefig(buf, format=fmt)
        plots[fmt] = buf.getvalue()
    (out / "figures").mkdir()
    for p in ours[6:]:
        p.write_bytes(plots[p.suffix[1:]])
    # the user's own, some of them matplotlib plots too: none is a file respaths writes
    users = {out / "models" / "notes.txt": "mine", out / "models" / "resnet" / "notes.txt": "mine too",
             out / "results" / "mine.json": '{"a": 1}', out / "results" / "mine.csv": "name,score\nme,1\n",
             out / "figures" / "photo.png": "\x89PNG not a plot",
             out / "figures" / f"{FIGURES['random']}.png": "\x89PNG a photo under a figure's name"}
    for p, text in users.items():
        p.write_text(text)
    user_plots = [out / "figures" / "mine.png", out / "figures" / "mine.svg", out / "results" / "mine.png",
                  out / "figures" / "layers-mine.png"]
    for p in user_plots:
        p.write_bytes(plots[p.suffix[1:]])
    (out / "run.json").write_text('{"schema": "respaths.run/1", "preset": {"name": "tiny"}, "steps": {}, "models": {}}')

    class Stop(Exception):  # the work itself is not what this test is about: stop once --force has acted
        pass

    def stop(p):
        raise Stop
    monkeypatch.setattr(reproduce, "model_specs", stop)
    with pytest.raises(Stop):
        cli.main(["reproduce", "--preset", "tiny", "--device", "cpu", "--force", "--no-progress", "--out", str(out)])
    assert [p for p in ours if p.exists()] == [] and not (out / "models" / "resnet" / "checkpoint").exists()
    assert not (out / "results" / "compare").exists()  # emptied, so removed
    assert {p: p.read_text() for p in users} == users
    assert [p for p in user_plots if p.read_bytes() != plots[p.suffix[1:]]] == []


def test_image_size_on_a_checkpoints_own_dataset_names_where_it_applies(tmp_path, capsys):
    checkpoint(tmp_path / "ck")
    rc, err = run_cli(["evaluate", tmp_path / "ck", "--limit", "8", "--image-size", "40,32"], capsys)
    assert rc == 2 and len(err) == 1, err
    assert "imagefolder:PATH" in err[0] and f"synthetic, the dataset {tmp_path / 'ck'} names" in err[0], err
