"""Figures and the HTML report: from synthetic result files (synthetic_run), and from a tiny real run.

The tiny run (synthetic data, 9-block nets at 1/8 width) is made once per module; three of its four
models are untrained checkpoints put there beforehand, which also checks that reproduce reuses the
models it finds. The Chromium test renders the report headless and keeps its screenshot in tmp/out.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
import torch

from respaths.study import claims, report
from respaths.cli import main
from respaths.study.read import load_study
from respaths.study.reproduce import PRESETS, reproduce
from tests.study.synthetic_run import DOWN, N, write_run

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("RESPATHS_TEST_OUT", REPO / "tmp" / "out"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")




def test_study_numbers_equal_a_naive_reading(tmp_path):
    out = write_run(tmp_path / "run")
    study = load_study(out)
    rand = json.loads((out / "results" / "compare" / "resnet-lesion-random.json").read_text())["records"]
    for k, mean, std in zip(study.random["resnet"]["k"], study.random["resnet"]["mean"],
                            study.random["resnet"]["std"]):
        errs = [r["error"] for r in rand if r["k"] == k and r["kind"] == "random"]
        assert mean == pytest.approx(sum(errs) / len(errs)) and std == pytest.approx(statistics.pstdev(errs))
    vgg = study.single["vgg"]["errors"]
    assert [i for i, e in enumerate(vgg) if e is None] == [0, 4, 8]  # layers that change shape
    # the effective range: the shortest window of lengths holding 90% of sum C(n, k) x mean, by brute force
    p = study.paths
    totals = [math.comb(N, k) * m for k, m in zip(p["lengths"], p["mean"])]
    best = min(((b - a, -sum(totals[a:b + 1]), a, b) for a in range(len(totals)) for b in range(a, len(totals))
                if sum(totals[a:b + 1]) >= 0.9 * sum(totals)))
    s = claims.path_summary(p)
    assert s["effective"] == (p["lengths"][best[2]], p["lengths"][best[3]])
    assert s["paths_share"] == pytest.approx(sum(math.comb(N, k) for k in range(best[2], best[3] + 1)) / 2 ** N)






def test_figures_from_synthetic_records(tmp_path):
    study = load_study(write_run(tmp_path / "run"))
    figs = report.make_figures(study)
    assert [stem for stem, _, _ in figs] == ["fig3-single-deletion", "fig5a-random-deletion", "fig5b-reorder",
                                             "fig6-paths", "fig7-surviving-paths", "fig8-stochastic-depth"]
    for stem, caption, fig in figs:
        title = fig._suptitle.get_text()
        assert "net-resnet" in title and "Fashion-MNIST" in title and re.search(r"[\d,]+ (test|training) images",
                                                                                 title), (stem, title)
        for ax in fig.axes:
            assert ax.get_ylabel(), (stem, "y label")
            if ax.get_xlabel() == "":  # only a twin axis shares its partner's x label
                assert any(o is not ax and o.bbox.bounds == ax.bbox.bounds for o in fig.axes), stem
        assert any(ax.get_legend() is not None for ax in fig.axes), stem
    fig3 = dict((s, f) for s, _, f in figs)["fig3-single-deletion"]
    marked = [l for ax in fig3.axes for l in ax.get_lines() if l.get_label() == "downsampling block"]
    assert list(marked[0].get_xdata()) == [i for i, d in enumerate(DOWN) if d]
    assert dict((s, f) for s, _, f in figs)["fig6-paths"].axes[1].get_yscale() == "log"


def test_fig3_draws_the_wilson_intervals_and_marks_undeletable_layers_off_the_data(tmp_path):
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Rectangle
    study = load_study(write_run(tmp_path / "run"))
    errors = study.single["resnet"]["errors"]
    study.single["resnet"]["ci"] = [[e - 0.01, e + 0.02] for e in errors]
    fig3 = dict((s, f) for s, _, f in report.make_figures(study))["fig3-single-deletion"]
    res_ax, vgg_ax = fig3.axes[:2]
    bars = [c for c in res_ax.containers if c.get_label() == "95% Wilson interval"]
    assert len(bars) == 1
    (segments,) = [c for c in bars[0].lines[2] if isinstance(c, LineCollection)]
    got = sorted(v for seg in segments.get_segments() for v in (seg[0][0], seg[0][1], seg[1][1]))
    assert got == pytest.approx(sorted(v for i, e in enumerate(errors) for v in (i, 100 * (e - 0.01), 100 * (e + 0.02))))
    undeletable = [i for i, e in enumerate(study.single["vgg"]["errors"]) if e is None]  # [0, 4, 8]
    for line in vgg_ax.get_lines():  # no point drawn for a layer that has no error (reference lines aside)
        if "no deletion" in line.get_label() or line.get_label().startswith("chance"):
            continue
        drawn = {round(float(x)) for x, y in zip(line.get_xdata(), line.get_ydata()) if not math.isnan(y)}
        assert not drawn & set(undeletable), line.get_label()
    centres = sorted(round(p.get_x() + p.get_width() / 2) for p in vgg_ax.patches if isinstance(p, Rectangle))
    assert centres == undeletable
    assert any(t.get_text() == "cannot be deleted (changes shape)" for t in vgg_ax.get_legend().get_texts())


# ---------------------------------------------------------------------------------------------
# A tiny real run

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from respaths.io.checkpoint import save_checkpoint
    from respaths.models import build_model
    from respaths.study.reproduce import model_specs

    from respaths.data import load_dataset

    out = tmp_path_factory.mktemp("tiny") / "run"
    p = PRESETS["tiny"]
    data = load_dataset(p.dataset, split="train")
    for role in ("resnet", "stochastic", "fixed"):  # untrained models left there: reproduce must reuse them
        spec = dict(model_specs(p)[role])
        torch.manual_seed(1)
        net = build_model(spec.pop("model"), in_channels=3, num_classes=10, **spec)
        save_checkpoint(out / "models" / role / "checkpoint", net, {"epoch": p.epochs, "dataset": data.info()})
    path = reproduce("tiny", out, progress=False, log=lambda s: None)
    return out, path


def test_fig3_of_a_run_draws_the_wilson_intervals_its_result_files_hold(tiny_run):
    out, _ = tiny_run
    study = load_study(out)
    for role, path in (("resnet", out / "results" / "compare" / "resnet-lesion-single.json"),
                       ("vgg", out / "results" / "single-vgg.json")):
        want = {r["deleted"][0]: r["error_ci"] for r in json.loads(path.read_text())["records"] if r["kind"] == "single"}
        assert want and {i: c for i, c in enumerate(study.single[role]["ci"]) if c is not None} == want, role
    fig3 = dict((s, f) for s, _, f in report.make_figures(study))["fig3-single-deletion"]
    assert [len([c for c in ax.containers if c.get_label() == "95% Wilson interval"]) for ax in fig3.axes[:2]] == [1, 1]


def test_tiny_run_writes_everything_and_resumes(tiny_run, tmp_path):
    out, path = tiny_run
    assert path == out / "report.html"
    run = json.loads((out / "run.json").read_text())
    assert "train vgg" in run["steps"] and "train resnet" not in run["steps"]  # trained one, reused three
    names = [f"compare/{role}-lesion-{kind}" for role in ("resnet", "stochastic", "fixed")
             for kind in ("single", "random")] + ["single-vgg", "reorder-resnet", "paths-resnet", "surviving-resnet"]
    for name in names:
        assert (out / "results" / f"{name}.json").is_file() and (out / "results" / f"{name}.csv").is_file(), name
    assert (out / "results" / "compare" / "compare.json").is_file()
    assert not list((out / "results").rglob("*.partial.jsonl"))
    figs = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert len(figs) == 6 and figs == sorted(p.stem for p in (out / "figures").glob("*.svg"))
    # the models' test errors equal a plain forward of each model over the test images
    from respaths.io.checkpoint import load_checkpoint
    from respaths.data import batches, load_dataset
    test = load_dataset("synthetic", split="test", limit=PRESETS["tiny"].budget.test_limit)
    cmp = json.loads((out / "results" / "compare" / "compare.json").read_text())
    vgg = json.loads((out / "results" / "single-vgg.json").read_text())["baseline"]
    counted = {"resnet": cmp["nets"]["resnet"]["test"]["errors"], "vgg": vgg["errors"]}
    for role in ("resnet", "vgg"):
        model, _ = load_checkpoint(out / "models" / role / "checkpoint")
        with torch.no_grad():
            wrong = sum(int((model(x).argmax(1) != y).sum()) for x, y in batches(test, 500))
        assert counted[role] == wrong, role
    # surviving paths counted from every random lesion match C(n-d, x) / C(n, x)
    surv = json.loads((out / "results" / "surviving-resnet.json").read_text())["records"]
    assert surv and all(r["match"] for r in surv)
    # a second call finds everything done: no result file is rewritten
    before = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*")}
    reproduce("tiny", out, progress=False, log=lambda s: None)
    assert before == {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*")}
    # the report is self-contained: every image is embedded, nothing is fetched
    html = path.read_text()
    imgs = re.findall(r"<img [^>]*src='([^']*)'", html)
    assert len(imgs) == 6 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", html)
    assert "id='claim-single'" in html
    # the run records its own settings; another preset is refused, and the demo would start it over
    from respaths.core import UserError
    from respaths.study.reproduce import holds_other_settings, preset
    assert not holds_other_settings(out, preset("tiny")) and holds_other_settings(out, preset("quick"))
    assert not holds_other_settings(tmp_path / "nothing-here", preset("quick"))
    with pytest.raises(UserError, match="holds a run of another preset"):
        reproduce("quick", out, progress=False, log=lambda s: None)




def test_report_command_side_by_side_and_errors(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    other = tmp_path / "second"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("models", "figures", "paths-resnet.*", "report.html"))
    target = tmp_path / "both.html"
    assert main(["report", str(out), str(other), "--out", str(target)]) == 0
    html = target.read_text()
    # the second run has no path gradients: no fig. 6 or 7, and those claims are "not measured"
    assert html.count("<img ") == 6 + 4 and "second (tiny)" in html and f"{out.name} (tiny)" in html
    assert "second (tiny): no fig6-paths in this run" in html and "not measured" in html
    assert not (other / "figures").exists() and not (other / "report.html").exists()  # runs left untouched
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "is not a respaths run directory" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "--preset", "nope"])
    assert e.value.code == 2


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_displays_every_figure_in_chromium(tiny_run, tmp_path):
    _, path = tiny_run
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    # The page's own script sets <body data-figures="shown/total"> on load: img.complete and naturalWidth > 0.
    dom = subprocess.run(common + ["--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<body[^>]*data-figures="(\d+)/(\d+)"', dom.stdout)
    assert m, dom.stderr[-2000:]
    assert m.group(1) == m.group(2) == "6"
    subprocess.run(common + ["--window-size=1400,4200", f"--screenshot={shot}", path.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000
