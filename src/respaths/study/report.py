"""The report: the claims checked with numbers (respaths.study.claims), the figures, how the run was made.

One self-contained HTML file (figures embedded as base64 PNG, no network needed to view it). The
report is built from a *study*: the `Study` record (respaths.study.read, which lists its parts) that
`load_study(DIR)` assembles from a run directory's result files (respaths.io.layout names them), or
from a folder of plain result files.

roles: "resnet" (the normally trained residual net), "vgg", "stochastic" (stochastic depth),
"fixed" (fixed-m). Every part is optional; a claim whose numbers are missing says "not measured".
Errors are fractions; the report prints percent and percentage points (pp).

A transformer's study (respaths study HF_DIR --text FILE) also has a metric,
  study.metric = {"name": "lm" | "cosine", "label": "LM loss" | "1 − cosine", "chance"},
and its "error" numbers are that metric's, larger = worse: the next-token loss in nats, or 1 - the
cosine of the mean-pooled output to the full model's. The figures put them on that axis and the
claims state their rules on it; chance is ln(vocabulary size) for an LM (the uniform distribution's
loss) and 1 for the cosine (an embedding orthogonal to the full model's).
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Sequence


from . import figures as F
from .. import paths
from ..drawing import render, save
from ..io.atomic import write_text
from ..io.layout import FIGURES, FIGURES_DIR, RunLayout
from ..core import UserError
from .claims import (FAILS, HOLDS, INCONCLUSIVE, MISSING, NOT_RUN, PARTLY, RULE_NOTES, RULES, Claim,
                     chance_error, claims, effective_left, metric_axis, numbers_of, path_summary, pct,
                     preset_note)
from .read import Study, load_study
from ..layers.figures import plot as layer_plot

# ---------------------------------------------------------------------------------------------
# Figures

def subtitle(study: Study, roles: Sequence[str], images: str | None = None) -> str:
    ds = study.dataset
    names = " vs ".join(f"{study.models[r]['label']} ({study.models[r]['blocks']} blocks)"
                        for r in roles if r in study.models)
    unit = " examples" if study.metric else " test images"  # text: windows (decoders) or lines
    return f"{names} · {ds['label']} · {images or format(ds['n_test'], ',') + unit}"


def sd_subtitle(study: Study, roles: Sequence[str]) -> str:
    m, ds = study.models, study.dataset
    how = {"resnet": "trained normally", "stochastic": f"stochastic depth p_L={m.get('stochastic', {}).get('stochastic_depth')}",
           "fixed": f"fixed m={m.get('fixed', {}).get('fixed_m')}"}
    return (f"{m['resnet']['label']} ({m['resnet']['blocks']} blocks): " + ", ".join(how[r] for r in roles)
            + f" · {ds['label']} · {ds['n_test']:,} test images")


def make_figures(study: Study) -> list[tuple[str, str, Any]]:
    """(file stem, caption, Figure) for every figure the study has numbers for."""
    out = []
    m, single, rand = study.models, study.single, study.random
    chance = chance_error(study)
    axis = metric_axis(study)
    noun = axis.title if study.metric else "test error"

    def panel(role):
        s = single[role]
        return dict(label=m[role]["label"], baseline=s["baseline"], errors=s["errors"],
                    downsample=m[role]["downsample"])

    roles = [r for r in ("resnet", "vgg") if r in single]
    if roles:
        out.append((FIGURES["single"], f"{axis.title} after deleting each block alone; downsampling blocks "
                    "are marked, the dashed line is the whole net.",
                    F.single_deletion([panel(r) for r in roles], subtitle(study, roles), chance, axis=axis)))
    if "resnet" in rand:
        r = rand["resnet"]
        out.append((FIGURES["random"], f"Mean {noun} and its spread over random sets of k deleted blocks.",
                    F.random_deletion([dict(label=m["resnet"]["label"], k=r["k"], mean=r["mean"], std=r["std"],
                                            n_samples=r.get("n_samples"),
                                            baseline=single.get("resnet", {}).get("baseline"))],
                                      subtitle(study, ["resnet"]), chance, axis=axis)))
    if "resnet" in study.reorder:
        r = study.reorder["resnet"]
        out.append((FIGURES["reorder"], "Each point is one shuffled order of the blocks (only blocks of equal shape "
                    "swapped); the line is the mean per τ bin.",
                    F.reorder([dict(label=m["resnet"]["label"], tau=r["tau"], error=r["error"],
                                    baseline=r["baseline"])], subtitle(study, ["resnet"]), axis=axis)))
    p = study.paths
    if p:
        s = path_summary(p)
        n = p["n"]
        imgs = f"gradients on {p['n_images']:,} training images" if p.get("n_images") else None
        out.append((FIGURES["paths"], "Path lengths, the gradient one path carries by length (log scale), and the "
                    "total per length with the effective range shaded.",
                    F.paths(n, p["lengths"], paths.path_fractions(n), p["mean"], p["low"],
                            p["high"], s["total"], s["effective"], s["held"], s["paths_share"],
                            subtitle(study, ["resnet"], imgs), samples=p.get("samples"))))
        measured = None
        if "resnet" in rand:
            r = rand["resnet"]
            measured = dict(label=m["resnet"]["label"], k=r["k"], mean=r["mean"],
                            effective_surviving=[effective_left(n, k, s) for k in r["k"]])
        ds = sorted({d for d in (1, 2, 5, 10, n // 2) if 1 <= d < n})
        out.append((FIGURES["surviving"], "Share of the paths of each length that survive d deletions, and the "
                    "effective gradient left against the measured error.",
                    F.surviving_paths(n, ds, subtitle(study, ["resnet"]), s["effective"], measured, axis=axis)))
    sd_roles = [r for r in ("resnet", "stochastic", "fixed") if r in single]
    if "stochastic" in single and "resnet" in single:
        series = [dict(label=m[r]["label"], k=rand[r]["k"], mean=rand[r]["mean"], std=rand[r]["std"])
                  for r in sd_roles if r in rand]
        out.append((FIGURES["stochastic"], "Error increase from deleting each block for the same architecture "
                    "trained normally, with stochastic depth and with fixed m; and k random deletions.",
                    F.stochastic_depth([panel(r) for r in sd_roles], sd_subtitle(study, sd_roles),
                                       random=series if len(series) > 1 else None)))
    out += layer_figures(Path(study.dir))
    return out


def layer_figures(run_dir: Path) -> list[tuple[str, str, Any]]:
    """Figures of `respaths layers` results saved in the run as results/layers-*.json (transformers)."""
    out = []
    for path in RunLayout(run_dir).layer_results():
        doc = json.loads(path.read_text())
        meta = doc.get("meta", {})
        if meta.get("command") == "layers":
            out.append((path.stem, f"respaths layers --method {meta['method']} on {meta.get('model_class', '')} "
                        f"({meta['blocks']} blocks, metric {meta.get('metric')}).", layer_plot(doc)))
    return out


# ---------------------------------------------------------------------------------------------
# HTML

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1500px;
     padding:0 1.5em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;width:100%} th,td{border:1px solid #ccc;padding:.4em .6em;
     vertical-align:top;text-align:left} th{background:#f3f3f3}
td.v{white-space:nowrap;font-weight:600;text-align:center} .rule{color:#666;font-size:.88em}
td.v .beside{white-space:normal;font-weight:400;font-size:.85em;min-width:11em}
.holds{background:#d9f2d9} .partly{background:#fff0c2} .fails{background:#f8d0d0} .missing{background:#eee;color:#777} .inconclusive{background:#e3e8f4}
figure{margin:1em 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em} .runs{display:grid;gap:1em} .sub{color:#666} code{font-size:.92em}
"""

# Sets <body data-figures="shown/total"> once the page has loaded: what the Chromium test reads.
CHECK_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-figures', ok + '/' + imgs.length);
});
"""

VCLASS = {HOLDS: "holds", PARTLY: "partly", FAILS: "fails", MISSING: "missing", INCONCLUSIVE: "inconclusive",
          NOT_RUN: "missing"}


def _e(x: Any) -> str:
    return html.escape(str(x))


def _claims_table(studies: list[Study], all_claims: list[list[Claim]]) -> str:
    head = "<tr><th>claim of the paper</th>" + "".join(
        f"<th>what we measured — {_e(s.title)}</th><th>verdict</th>" for s in studies) + "</tr>"
    rows = []
    for i, first in enumerate(all_claims[0]):
        cells = [f"<td>{_e(first.paper)}</td>"]
        for cl in (c[i] for c in all_claims):
            rule = f"<div class='rule'>{_e(cl.rule)}</div>" if cl.rule else ""
            beside = f"<div class='beside'>{_e(cl.beside)}</div>" if cl.beside else ""
            cells.append(f"<td>{_e(cl.measured or 'not measured in this run')}{rule}</td>"
                         f"<td class='v {VCLASS[cl.verdict]}'>{_e(cl.verdict)}{beside}</td>")
        rows.append(f"<tr id='claim-{first.key}'>" + "".join(cells) + "</tr>")
    return "<table class='claims'>" + head + "".join(rows) + "</table>"


def _models_table(study: Study) -> str:
    with numbers_of(study):
        return _models_rows(study)


def _models_rows(study: Study) -> str:
    rows = []
    for role, m in study.models.items():
        tr = m.get("training", {})
        rows.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in (
            role, m["label"], m["blocks"], f"{m.get('parameters', 0):,}",
            tr.get("epochs") if tr.get("epochs") is not None else "—",
            f"{tr['seconds']:.0f} s" if tr.get("seconds") is not None else
            ("not trained here" if study.kind == "study" else "reused"),
            pct(m["error"]) if m.get("error") is not None else "—")) + "</tr>")
    return ("<table><tr><th>role</th><th>model</th><th>blocks</th><th>parameters</th><th>epochs</th>"
            f"<th>training time</th><th>{_e(study.metric['label']) if study.metric else 'test error'}</th>"
            "</tr>" + "".join(rows) + "</table>")


def _meta_table(study: Study) -> str:
    meta = study.meta
    rows = []
    for k, v in meta.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {_fmt_seconds(b) if k.startswith(('durations', 'CPU')) else b}" for a, b in v.items())
        rows.append(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _fmt_seconds(x: Any) -> str:
    return f"{x:.1f} s" if isinstance(x, (int, float)) else str(x)


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def metric_rule_note(study: Study) -> str:
    """How the rules above read for a transformer's study: on its metric, with its chance."""
    m = study.metric
    chance = m.get("chance")
    if m["name"] == "lm":
        what = ("the LM loss (mean next-token cross-entropy in nats; lower is better) stands for the error, and "
                f"chance is the uniform distribution's loss, ln(vocabulary size)"
                + (f" = {chance:.4f}" if chance is not None else ""))
    else:
        what = ("1 − the cosine of each example's mean-pooled output to the full model's stands for the error "
                "(0 for the full model), and chance is 1 (an embedding orthogonal to the full model's)")
    return (f"These rules are read on the model's metric: {what}. Shares of the gap to chance are taken between the "
            f"whole model's value and chance; differences are in the metric's units, not pp.")


def render_html(studies: list[Study], figures: list[dict[str, tuple[str, bytes]]]) -> str:
    """studies: one or more; figures: per study, file stem -> (caption, PNG bytes)."""
    all_claims = [claims(s) for s in studies]
    one = len(studies) == 1
    title = f"respaths report — {studies[0].title}" if one else f"respaths report — {len(studies)} runs"
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{CSS}</style><script>{CHECK_JS}</script></head><body>",
             f"<h1>{_e(title)}</h1>",
             "<p class='sub'>Reproducing Veit, Wilber &amp; Belongie, <i>Residual Networks Behave Like Ensembles "
             "of Relatively Shallow Networks</i> (NIPS 2016). Every number below comes from the result files next "
             "to this report; the rules for each verdict were fixed before the runs.</p>"]
    for s, cl in zip(studies, all_claims):
        count = {v: sum(c.verdict == v for c in cl) for v in VCLASS}
        note = preset_note(s.preset_settings)
        what = (f"{s.dataset['n_test']:,} examples, scored by {s.metric['label']}" if s.metric
                else f"{s.dataset['n_test']:,} test images")
        parts.append(f"<p><b>{_e(s.title)}</b>: {_e(s.dataset['label'])}, {what}; "
                     + ", ".join(f"{n} {v}" for v, n in count.items() if n) + "."
                     + (f" <span class='sub'>{_e(note)}</span>" if note else "") + "</p>")
    parts += ["<h2>The paper's claims</h2>", _claims_table(studies, all_claims)]
    stems = list(dict.fromkeys(stem for f in figures for stem in f))
    parts.append("<h2>Figures</h2>")
    cols = f"style='grid-template-columns:repeat({len(studies)},1fr)'"
    for stem in stems:
        cells = []
        for s, f in zip(studies, figures):
            if stem in f:
                caption, png = f[stem]
                link = f" <a href='{FIGURES_DIR}/{stem}.svg'>SVG</a>" if one else ""
                cells.append(f"<figure>{_img(png, stem + ' — ' + s.title)}<figcaption>"
                             f"{'' if one else _e(s.title) + ': '}{_e(caption)}{link}</figcaption></figure>")
            else:
                cells.append(f"<p class='missing'>{_e(s.title)}: no {stem} in this run.</p>")
        parts.append(f"<div class='runs' {cols}>" + "".join(cells) + "</div>")
    parts.append("<h2>Models</h2>")
    for s in studies:
        parts.append(("" if one else f"<h3>{_e(s.title)}</h3>") + _models_table(s))
    parts.append("<h2>How this was run</h2>")
    for s in studies:
        parts.append(("" if one else f"<h3>{_e(s.title)}</h3>") + _meta_table(s))
    parts.append("<h2>Verdict rules</h2><table>" + "".join(
        f"<tr><th><code>{_e(k)}</code></th><td>{_e(v)}</td><td class='rule'>{_e(RULE_NOTES.get(k, ''))}</td></tr>"
        for k, v in RULES.items()) + "</table>")
    for s in studies:
        if s.metric:
            parts.append(f"<p class='rule'>{_e(s.title)}: {_e(metric_rule_note(s))}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def build(dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Load each run, draw its figures, write one HTML file (default DIR/report.html).

    With one run the figures are also saved beside it (DIR/figures, PNG + SVG); with several, the
    run directories are left untouched and the figures only live in the report."""
    if not dirs:
        raise UserError("give at least one run directory written by respaths reproduce.")
    if out is not None and Path(out).is_dir():  # checked before anything is read, drawn or saved
        raise UserError(f"{out} is a directory; give --out the name of the HTML file to write, "
                        f"e.g. {Path(out) / 'report.html'}.")
    studies = [load_study(d) for d in dirs]
    if out is None and len(studies) > 1:
        raise UserError("several runs make one report: say where it goes with --out FILE.")
    figs = []
    for s in studies:
        drawn = {}
        for stem, caption, fig in make_figures(s):
            png = (save(fig, RunLayout(s.dir).figure(stem))["png"] if len(studies) == 1
                   else render(fig, "png"))
            drawn[stem] = (caption, png)
        figs.append(drawn)
    out = Path(out) if out else RunLayout(studies[0].dir).report
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, render_html(studies, figs))
    return out
