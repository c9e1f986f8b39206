"""Issue 27, options that differ between commands: one way to give the model, no abbreviations,
--threads and --progress on every command that computes, --batch-size in one unit, honest --help."""
import argparse
import contextlib
import io
import re

import pytest

from respaths import cli

OPENS_A_MODEL = ["evaluate", "lesion", "reorder", "paths", "study", "prune", "layers"]
COMPUTES = ["train", "evaluate", "lesion", "reorder", "paths", "reproduce", "study", "demo", "prune", "layers"]
REQUIRED = {"study": ["--out", "o"], "prune": ["--blocks", "1", "--out", "o"], "layers": ["--method", "influence"]}


def parsed(argv):
    return cli.parse(argv)


@pytest.mark.parametrize("command", OPENS_A_MODEL)
def test_the_model_positionally_or_as_model_is_the_same(command):
    rest = REQUIRED.get(command, [])
    a = parsed([command, "respaths:resnet8", *rest])
    b = parsed([command, "--model", "respaths:resnet8", *rest])
    assert a.model == b.model == "respaths:resnet8"
    assert parsed([command, "respaths:resnet8", "--model", "respaths:resnet8", *rest]).model == "respaths:resnet8"


def test_study_model_is_not_read_as_model_kwargs():
    """argparse's prefix matching read `study --model X` as --model-kwargs X."""
    args = parsed(["study", "--model", "respaths:resnet8", "--out", "o"])
    assert args.model == "respaths:resnet8" and args.model_kwargs is None


def test_no_command_accepts_an_abbreviation():
    parser = cli.build_parser()
    assert parser.allow_abbrev is False
    assert all(p.allow_abbrev is False for p in parser.commands.values())
    with pytest.raises(SystemExit):
        with contextlib.redirect_stderr(io.StringIO()):
            parsed(["lesion", "respaths:resnet8", "--samp", "3"])


def options(command):
    return {s: a for a in cli.build_parser().commands[command]._actions for s in a.option_strings}


@pytest.mark.parametrize("command", COMPUTES)
def test_every_computing_command_takes_threads_and_progress(command):
    found = options(command)
    assert "--threads" in found, command
    assert "--progress" in found and "--no-progress" in found, command


def test_batch_size_counts_images_and_text_batch_size_text_everywhere():
    for command in cli.COMMANDS:
        found = options(command)
        if "--batch-size" in found:
            assert "images" in found["--batch-size"].help, command
        if "--seq-len" in found and command != "layers":
            assert "--text-batch-size" in found, command
    assert "--batch-size" not in options("prune") and "--batch-size" not in options("layers")


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_says_each_default_once_and_never_none(command):
    text = cli.build_parser().commands[command].format_help()
    assert "(default: None)" not in text
    flat = " ".join(text.split())
    for entry in re.split(r"\s(?=--?[a-z])", flat):
        assert entry.count("(default") <= 1, entry


def test_default_threads_leave_busy_cores_alone(monkeypatch):
    import os
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))  # one core busy with another job
    assert cli.default_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert cli.default_threads() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 7.0, 7.0))
    assert cli.default_threads() == 1


def test_default_threads_follow_omp_num_threads(monkeypatch):
    """OMP_NUM_THREADS=1 torchrun ... (docs/distributed.md) must give each rank one thread even on an idle
    machine, where the load rule alone would give every rank all the cores."""
    import os
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cli.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # never more than the cores
    assert cli.default_threads() == 4
    for junk in ("", "0", "two"):  # unset in effect: the load rule
        monkeypatch.setenv("OMP_NUM_THREADS", junk)
        assert cli.default_threads() == 4


def test_threads_hold_for_the_command_and_are_restored(monkeypatch):
    import torch
    seen = []
    monkeypatch.setitem(cli.COMMANDS, "evaluate", (cli.evaluate_args, lambda a: seen.append(torch.get_num_threads()),
                                                   "x"))
    before = torch.get_num_threads()
    assert cli.main(["evaluate", "respaths:resnet8", "--threads", "3"]) == 0
    assert seen == [3] and torch.get_num_threads() == before


@pytest.mark.parametrize("flag", ["--progress", "--no-progress"])
def test_prune_shows_a_bar_over_its_metric_before_and_after_when_asked(flag, tmp_path, capsys):
    argv = ["prune", "respaths:resnet8", "--dataset", "synthetic", "--limit", "8", "--blocks", "1", "--threads", "1",
            "--out", str(tmp_path / "pruned"), flag]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    shown = "before and after pruning" in err and "/3 " in err  # before, after, and the view's plan
    assert shown == (flag == "--progress"), err
