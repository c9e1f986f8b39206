"""respaths study: the paper's test-time study on a model the user brings, with the report."""
import json
import re

import pytest
import torch

from respaths import cli
from respaths.study.reproduce import PRESETS, reproduce


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """reproduce's tiny preset, its nets left untrained (saved here) so that only the VGG trains."""
    from respaths.io.checkpoint import save_checkpoint
    from respaths.data import load_dataset
    from respaths.models import build_model
    from respaths.study.reproduce import model_specs

    out = tmp_path_factory.mktemp("tiny") / "run"
    p = PRESETS["tiny"]
    data = load_dataset(p.dataset, split="train")
    for role in ("resnet", "stochastic", "fixed"):
        spec = dict(model_specs(p)[role])
        torch.manual_seed(1)
        net = build_model(spec.pop("model"), in_channels=3, num_classes=10, **spec)
        save_checkpoint(out / "models" / role / "checkpoint", net, {"epoch": p.epochs, "dataset": data.info()})
    reproduce("tiny", out, progress=False, log=lambda s: None)
    return out


def records(path):
    doc = json.loads(path.read_text())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in doc["records"]]


def test_study_of_a_checkpoint_equals_reproduce(tiny_run, tmp_path):
    from respaths.study.run import study
    p = PRESETS["tiny"]
    out = tmp_path / "study"
    path = study(str(tiny_run / "models" / "resnet" / "checkpoint"), out, budget_name=p.budget,
                 compare=[f"vgg={tiny_run / 'models' / 'vgg' / 'checkpoint'}"], progress=False, log=lambda s: None)
    assert path == out / "report.html"
    for name in ("compare/resnet-lesion-single", "compare/resnet-lesion-random", "reorder-resnet",
                 "paths-resnet", "surviving-resnet", "single-vgg"):
        assert records(out / "results" / f"{name}.json") == records(tiny_run / "results" / f"{name}.json"), name
    html = path.read_text()
    assert html.count("<img ") == 5  # figures 3 (with the VGG), 5a, 5b, 6, 7
    # the training claims read "not run": a study trains no nets
    for key in ("fixed", "stochastic"):
        row = re.search(rf"<tr id='claim-{key}'>.*?</tr>", html, re.S).group(0)
        assert "not run" in row and "--compare" in row
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "study" and run["models"]["resnet"]["training"]["epochs"] is None
    # the VGG that reproduce trained brings its training losses, for the convergence rule
    from respaths.study.read import train_losses
    vgg_losses = train_losses(tiny_run / "models" / "vgg")
    assert vgg_losses and run["models"]["vgg"]["training"]["train_loss"] == vgg_losses
    # running again finds everything done
    before = {q: q.stat().st_mtime_ns for q in (out / "results").rglob("*")}
    study(str(tiny_run / "models" / "resnet" / "checkpoint"), out, budget_name=p.budget,
          compare=[f"vgg={tiny_run / 'models' / 'vgg' / 'checkpoint'}"], progress=False, log=lambda s: None)
    assert before == {q: q.stat().st_mtime_ns for q in (out / "results").rglob("*")}


def test_study_of_published_resnet20_from_the_command_line(data_dir, tmp_path, capsys):
    """Real weights through the CLI: the baseline and single-deletion errors equal a plain functional
    forward of the published state dict (tests/test_pretrained.py's, no respaths code)."""
    from tests.published import WEIGHTS, forward, images_and_weights
    data_dir = str(data_dir)
    limit = 200
    out = tmp_path / "r20"
    assert cli.main(["study", "respaths:resnet20", "--weights", str(WEIGHTS), "--dataset", "cifar10", "--data-dir",
                     data_dir, "--normalize", "imagenet", "--limit", str(limit), "--out", str(out),
                     "--no-progress", "--exact"]) == 0
    assert "report:" in capsys.readouterr().out
    single = json.loads((out / "results" / "compare" / "resnet-lesion-single.json").read_text())
    got = {tuple(r["deleted"]): r["errors"] for r in single["records"]}
    assert single["meta"]["preprocessing"]["normalize"] == "imagenet"

    data, x, sd = images_and_weights(data_dir, limit)
    with torch.no_grad():
        assert got[()] == int((forward(sd, x).argmax(1) != data.labels).sum())
        for i in range(9):
            assert got[(i,)] == int((forward(sd, x, deleted=i).argmax(1) != data.labels).sum()), i
    assert (out / "report.html").is_file() and len(list((out / "figures").glob("*.png"))) == 5


@pytest.mark.parametrize("bad, words", [
    (["--compare", "vgg"], "not NAME=MODEL"),
    (["--compare", "resnet=respaths:resnet8"], "is taken"),
    (["--budget", "huge"], "invalid choice"),
    (["--limit", "0"], "1 or more"),
    (["--model-kwargs", "oops"], "KEY=VALUE"),
    (["--compare", "vgg=respaths:nope"], "unknown model"),
    (["--normalize", "imagenet", "--mean", "0.5"], "go together"),
])
def test_bad_study_options_write_nothing(bad, words, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["study", "respaths:resnet8", "--dataset", "synthetic", "--out", str(out), *bad]
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err, err
    assert not out.exists()


def test_study_refuses_a_plain_net(tmp_path, capsys):
    assert cli.main(["study", "respaths:plain20", "--dataset", "synthetic", "--out", str(tmp_path / "o")]) == 2
    assert "no residual blocks" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_single_commands_draw_their_figures_and_report_reads_their_folder(tmp_path, capsys):
    """lesion, reorder and paths on a brought model write PNG/SVG beside their results, and
    `respaths report` makes a report of the folder they wrote (no reproduce run needed)."""
    from safetensors.torch import save_file

    from respaths.models import build_model
    torch.manual_seed(0)
    net = build_model("resnet20", in_channels=3, num_classes=10, width=0.25)
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    out = tmp_path / "runs"
    common = ["--model", "respaths:resnet20", "--model-kwargs", "width=0.25", "--weights", str(tmp_path / "w.safetensors"),
              "--dataset", "synthetic", "--out", str(out), "--no-progress"]
    assert cli.main(["lesion", *common, "--limit", "64"]) == 0
    assert cli.main(["lesion", *common, "--limit", "64", "--mode", "random", "--k", "1,2,4", "--samples", "2"]) == 0
    assert cli.main(["reorder", *common, "--limit", "64", "--k", "1,2,3", "--samples", "2"]) == 0
    assert cli.main(["paths", *common, "--samples", "2", "--batches", "1", "--batch-size", "8"]) == 0
    printed = capsys.readouterr().out
    for name in ("lesion-single", "lesion-random", "reorder", "paths"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.svg").is_file(), name
        assert f"{name}.png" in printed
    paths = json.loads((out / "paths.json").read_text())
    assert paths["meta"]["source"]["model"] == "respaths:resnet20" and paths["meta"]["preprocessing"]["normalize"] == "dataset"
    assert cli.main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert html.count("<img ") == 5  # figures 3, 5a, 5b, 6 and 7
    for key in ("single", "random", "reorder", "gradient"):
        row = re.search(rf"<tr id='claim-{key}'>.*?</tr>", html, re.S).group(0)
        # read from the folder; a statistic of numbers that do not vary (an untrained net's equal errors)
        # is "not measured" with that reason, never a verdict on nan
        assert "not measured" not in row or "undefined" in row, key
    assert cli.main(["report", str(tmp_path)]) == 2  # no run.json and no result files
    assert "neither run.json nor result files" in capsys.readouterr().err


def test_degenerate_models_are_warned_about_once(tmp_path, capsys):
    """No weights (random initialisation), or every branch zero (timm's zero_init_last before training):
    one warning line each, after the results, and the command still runs."""
    from safetensors.torch import save_file

    from respaths.models import build_model
    out = ["--dataset", "synthetic", "--limit", "16", "--no-progress", "--no-figure"]
    assert cli.main(["lesion", "--model", "respaths:resnet8", *out, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [ln for ln in err if ln.startswith("warning:")] == [
        "warning: no weights were given, so the model is randomly initialised; its numbers say nothing about a "
        "trained net."]
    net = build_model("resnet8", in_channels=3, num_classes=10)
    for b in net.blocks:  # the last BatchNorm of every branch zero-initialised, as timm's zero_init_last does
        torch.nn.init.zeros_(b.branch[-1].weight)
    save_file(net.state_dict(), tmp_path / "zero.safetensors")
    assert cli.main(["lesion", "--model", "respaths:resnet8", "--weights", str(tmp_path / "zero.safetensors"), *out,
                     "--out", str(tmp_path / "b")]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and "every block's branch outputs zero" in warned[0]


def test_a_brought_nets_training_claims_read_inconclusive_with_the_reason():
    from respaths.study.claims import convergence
    ok, why = convergence({"label": "theirs", "training": {"epochs": None, "train_loss": None},
                           "source": {"model": "respaths:resnet32"}})
    assert not ok and "no record of how theirs was trained" in why
    ok, _ = convergence({"label": "ours", "training": {"train_loss": [1.0, 0.999]}})
    assert ok  # a net respaths trained is judged by its losses as before


def test_compared_checkpoint_keeps_its_own_normalisation(tiny_run, tmp_path):
    """--normalize belongs to the net under study: a compared respaths checkpoint (the VGG trained here)
    is tested with the statistics it was trained with, so its single deletions equal a lesion of it alone."""
    from respaths.experiments.lesion import lesion_single
    from respaths.opening import open_model
    from respaths.study.run import study
    p = PRESETS["tiny"]
    vgg = tiny_run / "models" / "vgg" / "checkpoint"
    out = tmp_path / "study"
    study("respaths:preresnet20", out, budget_name=p.budget, dataset="synthetic", normalize="imagenet",
          model_kwargs={"width": 0.125}, compare=[f"vgg={vgg}"], progress=False, report=False, log=lambda s: None)
    single = json.loads((out / "results" / "single-vgg.json").read_text())
    assert single["meta"]["preprocessing"]["normalize"] != "imagenet"
    alone = open_model(str(vgg), limit=p.budget.test_limit)
    got = lesion_single(alone.view, alone.data, out=None, progress=False)
    assert {r["key"]: r["errors"] for r in got} == {r["key"]: r["errors"] for r in single["records"]}


def test_study_shows_a_bar_per_step_and_a_resumed_run_says_how_much_it_kept(tmp_path, capsys):
    """--progress: each step's bar has its name, a total and an ETA; run again, each step says how much it
    kept; an experiment cut short resumes with a bar that starts at what was kept, and says so (issue 27)."""
    out = tmp_path / "s"
    argv = ["study", "respaths:resnet14", "--dataset", "synthetic", "--limit", "16", "--out", str(out)]
    assert cli.main(argv + ["--progress"]) == 0
    err = capsys.readouterr().err.replace("\r", "\n")
    single = json.loads((out / "results" / "compare" / "resnet-lesion-single.json").read_text())
    n_single = len(single["records"])
    n_random = len(json.loads((out / "results" / "compare" / "resnet-lesion-random.json").read_text())["records"])
    n_reorder = len(json.loads((out / "results" / "reorder-resnet.json").read_text())["records"])
    for name, total in (("single deletion, resnet", n_single), ("random deletion, resnet", n_random),
                        ("reordering blocks", n_reorder), ("path gradients", 24 * 7)):
        assert re.search(rf"^{name}: 100%.*\| {total}/{total} \[", err, re.M), (name, err)
        assert re.search(rf"^{name}: .*/{total} \[\d\d:\d\d<(\d\d:\d\d|\?)", err, re.M), name
    assert cli.main(argv + ["--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"single and random deletion ({n_single + n_random}/{n_single + n_random} plans): already done, kept" in err
    assert f"reordering blocks ({n_reorder}/{n_reorder} plans): already done, kept" in err
    assert "(7/7 lengths): already done, kept" in err and "|" not in err  # no bar without --progress

    from respaths.experiments.lesion import lesion_single
    from respaths.opening import open_model
    opened = open_model("respaths:resnet14", dataset="synthetic", limit=16)
    prefix = tmp_path / "single"
    lesion_single(opened.view, opened.data, out=str(prefix), progress=False)
    done = json.loads((prefix.with_suffix(".json")).read_text())
    header = json.dumps({"schema": "respaths.io.results/1", "meta": done["meta"]})
    (tmp_path / "single.partial.jsonl").write_text("\n".join([header] + [json.dumps(r) for r in done["records"][:3]]) + "\n")
    prefix.with_suffix(".json").unlink()
    again = lesion_single(opened.view, opened.data, out=str(prefix), progress=True)
    assert [r["key"] for r in again] == [r["key"] for r in done["records"]]
    err = capsys.readouterr().err.replace("\r", "\n")
    assert f"single deletion: 3/{n_single} plans already done in {prefix}, kept" in err
    assert re.search(rf"^single deletion:\s+\d+%.*\| 3/{n_single} \[", err, re.M), err


def test_a_step_computed_outside_the_run_is_marked_untimed(tmp_path):
    """A piece run outside `respaths study` (the reordering under torchrun, say) leaves its result with no
    time in run.json; the study then finds it done and records it as untimed, and the report's total says
    it leaves that step out instead of reading as the whole run's time."""
    out = tmp_path / "s"
    argv = ["study", "respaths:resnet14", "--dataset", "synthetic", "--limit", "16", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    run_json = out / "run.json"
    run = json.loads(run_json.read_text())
    timed_reorder = run["steps"].pop("reorder resnet")  # as if the reordering had been computed by another process
    assert timed_reorder["seconds"] > 0
    run_json.write_text(json.dumps(run))
    assert cli.main(argv) == 0
    steps = json.loads(run_json.read_text())["steps"]
    assert steps["reorder resnet"]["timed"] is False and "seconds" not in steps["reorder resnet"]
    assert steps["paths resnet"]["seconds"] == run["steps"]["paths resnet"]["seconds"]  # timed before: kept as it was
    html = (out / "report.html").read_text()
    # the report was written before this call's own "report" time replaced the first call's
    total = sum(v["seconds"] for k, v in steps.items() if "seconds" in v and k != "report") + run["steps"]["report"]["seconds"]
    assert f"{total:.0f} s wall clock" in html and "without reorder resnet (not timed here)" in html
    assert re.search(r"reorder resnet: not timed: found done, computed outside this run(&#x27;|')s calls", html)
