"""The report: the claims checked with numbers (respaths.study.claims), the figures, how the run was made.

One self-contained HTML file (figures embedded as base64 PNG, no network needed to view it). The
report is built from a *study*: the `Study` record (respaths.study.read, which lists its parts) that
`load_study(DIR)` assembles from a run directory's result files (respaths.io.layout names them), or
from a folder of plain result files.

Runs of residual nets of several depths also get a depth-series section (series_of, series_figures,
series_html): each claim's statistic against the number of blocks, from respaths.study.series.

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
import math
from pathlib import Path
from typing import Any, Sequence


from . import figures as F
from .. import paths
from ..drawing import render, save
from ..io.atomic import write_text
from ..io.layout import FIGURES, FIGURES_DIR, RunLayout
from ..core import UserError
from .claims import (FAILS, HOLDS, INCONCLUSIVE, MISSING, NOT_RUN, PARTLY, RULE_NOTES, RULES, Claim,
                     budget_note, chance_error, claims, effective_left, metric_axis, numbers_of, path_summary, pct,
                     preset_note)
from . import series as S
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
    noun = study.scored_by().label

    def panel(role):
        s = single[role]
        return dict(label=m[role]["label"], baseline=s["baseline"], errors=s["errors"],
                    downsample=m[role]["downsample"], ci=s.get("ci"))

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
.differs{background:#fff0c2;padding:.5em .8em} table.series td{white-space:nowrap}
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
            f"<th>training time</th><th>{_e(study.scored_by().label)}</th>"
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
    what = study.scored_by().rule_note(study.metric.get("chance"))
    return (f"These rules are read on the model's metric: {what}. Shares of the gap to chance are taken between the "
            f"whole model's value and chance; differences are in the metric's units, not pp.")


def render_html(studies: list[Study], figures: list[dict[str, tuple[str, bytes]]], series_part: str = "") -> str:
    """studies: one or more; figures: per study, file stem -> (caption, PNG bytes); series_part: the depth
    series' section (series_html), if the runs make one."""
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
        note = " ".join(n for n in (preset_note(s.preset_settings), budget_note(s)) if n)
        what = (f"{s.dataset['n_test']:,} examples, scored by {s.scored_by().label}" if s.metric
                else f"{s.dataset['n_test']:,} test images")
        parts.append(f"<p><b>{_e(s.title)}</b>: {_e(s.dataset['label'])}, {what}; "
                     + ", ".join(f"{n} {v}" for v, n in count.items() if n) + "."
                     + (f" <span class='sub'>{_e(note)}</span>" if note else "") + "</p>")
    parts += ["<h2>The paper's claims</h2>", _claims_table(studies, all_claims)]
    if series_part:
        parts.append(series_part)
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
    """Load each run, draw its figures, write one HTML file; returns its path.

    out: the HTML file (default DIR/report.html for one run), or a directory (an existing one, or a name
    not ending in .html) that gets report.html, and for runs of several depths the series' figures
    (figures/series-*.png, .svg) and table (series.json). With one run its figures are also saved beside
    it (DIR/figures, PNG + SVG); with several, the run directories are left untouched."""
    if not dirs:
        raise UserError("give at least one run directory written by respaths reproduce.")
    folder = None
    if out is not None and (Path(out).is_dir() or Path(out).suffix.lower() not in (".html", ".htm")):
        folder = Path(out)
        if RunLayout(folder).run_json.exists() and len(dirs) > 1:  # checked before anything is read or written
            raise UserError(f"{folder} is a run directory; give --out a new directory (or an .html file) for the "
                            f"report of several runs.")
        out = RunLayout(folder).report
    studies = [load_study(d) for d in dirs]
    if out is None and len(studies) > 1:
        raise UserError("several runs make one report: say where it goes with --out DIR or --out FILE.html.")
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
    part = ""
    made = series_of(studies) if len(studies) > 1 else None
    if made:
        nets, rows = made
        drawn_series = []
        for stem, caption, fig in series_figures(nets, rows):
            png = save(fig, RunLayout(out.parent).figure(stem))["png"] if folder else render(fig, "png")
            drawn_series.append((stem, caption, png))
        part = series_html(nets, rows, drawn_series, links=folder is not None)
        if folder:
            write_text(RunLayout(folder).series_json, json.dumps(series_record(nets, rows), indent=1) + "\n")
    write_text(out, render_html(studies, figs, part))
    return out


# ---------------------------------------------------------------------------------------------
# The depth series: runs of nets of several depths (respaths.study.series)

SERIES_UNITS = {"pp": lambda v: f"{100 * v:+.2f} pp", "share": lambda v: f"{100 * v:.3g}%",
                "rho": lambda v: f"{v:.3f}", "factor": lambda v: f"×{v:.3f}", "blocks": lambda v: f"{v:.3g}"}
SERIES_INTERVALS = {
    "blocks": "bootstrap over the non-downsampling blocks",
    "images": "bootstrap over the test images (each deletion's counts of images made wrong and right)",
    "random sets": "bootstrap over the random sets of each k",
    "orders": "bootstrap over the shuffled orders",
    "sampled paths": "each length's mean gradient drawn from its sampling error over the sampled paths",
    "random sets and sampled paths": "bootstrap over the random sets and the sampled paths' sampling error",
}


def series_of(studies: Sequence[Study]) -> tuple[list[Any], list[Any]] | None:
    """(nets, rows) where the studies hold residual classifiers of at least two depths; else None."""
    nets = [n for n in (S.series_net(s) for s in studies) if n is not None]
    if len({n.blocks for n in nets}) < 2:
        return None
    nets = sorted(nets, key=lambda n: n.blocks)
    return nets, S.series(nets)


def _estimate(v: Any, unit: str) -> str:
    if v is None or v.value is None:
        return "—"
    f = SERIES_UNITS[unit]
    return f(v.value) + (f" [{f(v.low)}, {f(v.high)}]" if v.low is not None and v.high is not None else "")


def _trend_line(row: Any, ns: Sequence[int], name: str) -> dict[str, Any]:
    """A figure's line of one statistic: its values, the trend over the measured depths and beyond."""
    t = row.trend
    out = {"label": name, "interval": row.interval, "n": list(ns), "value": [v.value for v in row.values],
           "low": [v.low for v in row.values], "high": [v.high for v in row.values],
           "model": f"{S.TREND_MODELS[t.model].formula}"}
    if t.a is not None:
        top = max(ns)
        fit_x = [min(ns) + (top - min(ns)) * i / 40 for i in range(41)]
        extra_x = [top + (t.at - top) * i / 40 for i in range(41)]
        lo, hi = row.bounds or (-math.inf, math.inf)
        clip = (lambda y: min(max(y, lo), hi))
        out.update(fit_x=fit_x, fit_y=[clip(S.trend_value(t, x)) for x in fit_x], extra_x=extra_x,
                   extra_y=[clip(S.trend_value(t, x)) for x in extra_x])
    if t.prediction is not None:
        p = t.prediction
        out["prediction"] = {"at": t.at, "value": p.value, "low": p.low, "high": p.high}
    return out


def series_figures(nets: Sequence[Any], rows: Sequence[Any]) -> list[tuple[str, str, Any]]:
    """(file stem, caption, Figure): one figure per claim of the series."""
    by = {r.key: r for r in rows}
    ns = [n.blocks for n in nets]
    sub = " · ".join(f"{n.label}: {n.about.get('dataset', '?')}, {n.about.get('test images', '?')} images"
                     for n in nets)
    extrapolation = (f"Bars: 95% intervals (see the table for what each resamples). Dashed: the fitted trend "
                     f"extrapolated to the paper's {S.PAPER_BLOCKS} blocks, beyond the measured depths (shaded); the "
                     f"open diamond is its prediction with a 95% prediction interval.")

    def panel(keys, title, ylabel, unit, names=None, **extra):
        names = dict(zip(keys, names or [by[k].label for k in keys if k in by]))
        lines = [_trend_line(by[k], ns, names[k]) for k in keys if k in by]
        scale, fmt = {"pp": (100, "{:+.2f} pp"), "share": (100, "{:.3g}%"), "rho": (1, "{:.3f}"),
                      "factor": (1, "×{:.3f}"), "blocks": (1, "{:.3g}")}[unit]
        return dict(title=title, ylabel=ylabel, scale=scale, fmt=fmt, lines=lines, **extra) if lines else None

    out = []
    quartiles = ["median", "lower quartile", "upper quartile", "worst block"]

    def add(stem, caption, title, panels):
        panels = [p for p in panels if p]
        if panels:
            out.append((stem, caption + " " + extrapolation, F.depth_series(panels, title, sub)))

    add("series-single", "The cost of deleting one non-downsampling block alone: median, quartiles and the worst "
        "block, in pp and as a share of the gap between the whole net and chance.",
        "Single deletion against depth (Veit et al. fig. 3)",
        [panel(["single_median_pp", "single_q1_pp", "single_q3_pp", "single_worst_pp"], "(a) in percentage points",
               "error increase (pp)", "pp", names=quartiles),
         panel(["single_median_gap", "single_q1_gap", "single_q3_gap", "single_worst_gap"],
               "(b) as a share of the gap to chance", "share of the gap to chance (%)", "share", log=True,
               names=quartiles,
               hlines=[(RULES["single_gap"], f"the rule's threshold ({100 * RULES['single_gap']:.0f}%)")])])
    add("series-within", "The share of non-downsampling blocks whose deletion stays within the rule.",
        "Blocks within the single-deletion rule against depth",
        [panel(["single_within"], "share of blocks within", "blocks within the rule (%)", "share", ylim=(0, 1),
               hlines=[(RULES["single_share"], f"holds from {100 * RULES['single_share']:.0f}%")])])
    if "random_rise" in by:
        curves = [dict(label=n.label, **S.random_curve_band(n)) for n in nets if n.random]
        out.append(("series-random", "Random deletion: the mean error against the share of blocks deleted, and "
                    f"its rise at k/n = {S.RANDOM_AT:g} as a share of the gap to chance. " + extrapolation,
                    F.random_k_series(curves, dict(panel(["random_rise"], f"(b) rise at k/n = {S.RANDOM_AT:g}",
                                                         "share of the gap to chance (%)", "share", ylim=(0, 1),
                                                         names=[f"rise at k/n = {S.RANDOM_AT:g}"]),
                                                   at_x=S.RANDOM_AT), sub, nets[0].chance)))
    add("series-reorder", "Reordering: Spearman ρ between Kendall τ and the error over the shuffled orders.",
        "Reordering against depth (Veit et al. fig. 5b)",
        [panel(["reorder_rho"], "Spearman ρ(τ, error)", "ρ", "rho",
               hlines=[(RULES["reorder_rho"], f"holds at or below {RULES['reorder_rho']}")])])
    add("series-gradient", "The factor by which one more block in a path multiplies its gradient (log-linear fit "
        "over the path lengths).", "Gradient decay per block against depth (Veit et al. fig. 6b)",
        [panel(["gradient_factor"], "gradient factor per extra block", "× per block", "factor",
               hlines=[(1.0, "no decay")])])
    add("series-effective", "The effective range (the shortest range of path lengths holding "
        f"{100 * RULES['effective_share']:.0f}% of the gradient) and its share of all 2^n paths.",
        "Effective paths against depth (Veit et al. fig. 6c)",
        [panel(["effective_low", "effective_high"], "(a) effective range of path lengths", "path length (blocks)",
               "blocks", half_n=True),
         panel(["effective_paths_share"], "(b) its share of all paths", "share of all paths (%, log)", "share",
               log=True)])
    add("series-surviving", "R² of the mean error after k random deletions against the effective gradient they "
        "remove.", "Surviving paths against depth (Veit et al. fig. 7)",
        [panel(["surviving_r2"], "R²", "R² (%)", "share", ylim=(0, 1),
               hlines=[(RULES["surviving_r2"], f"holds from {RULES['surviving_r2']}")])])
    return out


def series_html(nets: Sequence[Any], rows: Sequence[Any], figures: Sequence[tuple[str, str, bytes]],
                links: bool) -> str:
    """The series section: what differs besides depth, the table, the figures and the trend models."""
    parts = ["<h2 id='series'>Depth series</h2>",
             f"<p>{len(nets)} nets of {', '.join(str(n.blocks) for n in nets)} blocks. Each statistic with its 95% "
             f"interval; the trend is a least-squares fit over the nets, and its prediction at the paper's "
             f"{S.PAPER_BLOCKS} blocks is an extrapolation, with a 95% prediction interval (t on nets − 2 degrees "
             f"of freedom: with three nets it is wide).</p>"]
    diff = S.differences(nets)
    if diff:
        parts.append("<p class='differs'><b>These nets differ in more than depth</b>, so the trend mixes depth "
                     "with: " + "; ".join(_e(d) for d in diff) + ".</p>")
    else:
        parts.append("<p>The nets differ only in depth as far as their records tell (dataset, test images, "
                     "preprocessing, family, training record and budget are the same).</p>")
    head = ("<tr><th>statistic</th>" + "".join(f"<th>{_e(n.label)}</th>" for n in nets)
            + f"<th>trend</th><th>at {S.PAPER_BLOCKS} blocks (extrapolation)</th><th>interval</th></tr>")
    body = []
    for r in rows:
        t = r.trend
        pred = _estimate(t.prediction, r.unit) if t.prediction else "—"
        body.append(f"<tr id='series-{r.key}'><td>{_e(r.label)}</td>"
                    + "".join(f"<td>{_e(_estimate(v, r.unit))}</td>" for v in r.values)
                    + f"<td>{_e(S.TREND_MODELS[t.model].formula)}</td><td>{_e(pred)}"
                    + (f"<div class='rule'>{_e(t.note)}</div>" if t.note else "") + "</td>"
                    f"<td class='rule'>{_e(SERIES_INTERVALS[r.interval])}</td></tr>")
    parts.append("<table class='series'>" + head + "".join(body) + "</table>")
    used = list(dict.fromkeys(r.trend.model for r in rows))
    parts.append("<p class='rule'>Trend models: " + " ".join(
        f"<b>{_e(S.TREND_MODELS[m].formula)}</b> ({_e(S.TREND_MODELS[m].name)}): {_e(S.TREND_MODELS[m].why)}."
        for m in used) + "</p>")
    for stem, caption, png in figures:
        link = f" <a href='figures/{stem}.svg'>SVG</a>" if links else ""
        parts.append(f"<figure>{_img(png, stem)}<figcaption>{_e(caption)}{link}</figcaption></figure>")
    return "\n".join(parts)


def series_record(nets: Sequence[Any], rows: Sequence[Any]) -> dict[str, Any]:
    """The series table as JSON (series.json beside the report)."""
    def est(v):
        return None if v is None else {"value": v.value, "low": v.low, "high": v.high}
    return {"schema": "respaths.series/1", "level": S.LEVEL, "bootstrap": S.BOOTSTRAP, "at": S.PAPER_BLOCKS,
            "nets": [{"label": n.label, "blocks": n.blocks, "about": n.about} for n in nets],
            "differences": S.differences(nets),
            "statistics": [{"key": r.key, "claim": r.claim, "label": r.label, "unit": r.unit,
                            "interval": SERIES_INTERVALS[r.interval], "values": [est(v) for v in r.values],
                            "trend": {"model": S.TREND_MODELS[r.trend.model].formula, "a": r.trend.a, "b": r.trend.b,
                                      "prediction": est(r.trend.prediction), "note": r.trend.note}}
                           for r in rows]}
