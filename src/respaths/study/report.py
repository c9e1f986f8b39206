"""The report: the paper's claims checked with numbers, the figures, and how the run was made.

One self-contained HTML file (figures embedded as base64 PNG, no network needed to view it). The
report is built from a *study*: the `Study` record (respaths.study.read, which lists its parts) that
`load_study(DIR)` assembles from the result files a `respaths reproduce` run leaves in DIR (see
respaths.study.reproduce for the layout), or `load_results_folder(DIR)` from plain result files.

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
import contextlib
import contextvars
import html
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from scipy import stats as sps

from . import figures as F
from .. import paths
from ..io.atomic import write_text
from ..core import UserError
from ..models import blocks_of
from .read import Study, load_results_folder, load_study
from ..layers.figures import plot as layer_plot

HOLDS, PARTLY, FAILS, MISSING = "holds", "partly", "does not hold", "not measured"
INCONCLUSIVE = "inconclusive"
NOT_RUN = "not run"  # a study of brought nets trains none, so the training claims have nothing to judge

# The verdict rules, fixed before looking at any result. Shares of the gap between the whole net's
# error and chance make one rule fit datasets of any difficulty.
RULES = {
    "single_max_gap": 0.05,    # residual: one non-downsampling block deleted costs <= 5% of the gap to chance
    "vgg_min_gap": 0.5,        # VGG: every single deletion goes at least half way to chance
    "random_rho": 0.9,         # mean error vs k: Spearman rho at least this
    "random_max_step": 0.5,    # ... and no single step in k makes more than half of the total rise
    "reorder_rho": -0.5,       # error vs Kendall tau: Spearman rho at most this, p < 0.01
    "grad_rho": -0.9,          # gradient per path vs length: Spearman rho at most this
    "effective_share": 0.9,    # the effective range holds this share of the total gradient
    "surviving_r2": 0.9,       # mean error vs effective gradient lost: R^2 of a straight line
    "fixed_margin": 0.01,      # fixed-m net no worse than the full net by more than 1 pp (CI upper end)
    # Claims comparing two training procedures are judged only between nets trained to convergence:
    # the training loss fell by at most this share over the last epoch (and at least 2 epochs ran).
    # Otherwise they read "inconclusive", so that a too-short run never reads as the paper being wrong.
    "converged_loss_change": 0.02,
}


RULE_NOTES = {
    "single_max_gap": "largest single-deletion increase (non-downsampling blocks), as a share of chance minus whole-net error",
    "vgg_min_gap": "smallest VGG single-deletion increase, as a share of chance minus whole-net error",
    "random_rho": "Spearman rho of the mean error against k",
    "random_max_step": "largest rise between consecutive k, as a share of the whole rise",
    "reorder_rho": "Spearman rho of the error against Kendall tau",
    "grad_rho": "Spearman rho of the mean path gradient against the path length",
    "effective_share": "share of the total gradient the effective range must hold",
    "surviving_r2": "R^2 of the mean error against the effective gradient lost",
    "fixed_margin": "fixed-m error minus full-net error: the CI's upper end must stay below this",
    "converged_loss_change": "a net counts as trained to convergence when its training loss fell by at most this "
                             "share over its last epoch (of at least 2); the fixed-m and stochastic-depth claims "
                             "are judged only between such nets, else they read inconclusive",
}

def preset_note(settings: dict[str, Any] | None) -> str | None:
    """What a reader should know about a preset before reading its verdicts, from the preset record the
    run keeps in its run.json (a study's own settings, which train nothing, get no note)."""
    p = settings or {}
    if p.get("name") == "tiny":
        return "A test run on synthetic data with barely trained nets: the verdicts mean nothing."
    if p.get("train_limit") is None or "epochs" not in p:  # trained on the whole set, to convergence
        return None
    epochs, blocks = p["epochs"], blocks_of(p["model"])
    return (f"A small-scale run: {epochs} epoch{'s' if epochs != 1 else ''} on {p['train_limit']:,} images and "
            f"{blocks} blocks at width ×{p['width']:g}, so no net is trained to convergence. The stochastic-depth "
            f"and fixed-m nets learn more slowly per step than the normal net, so the claims comparing them with "
            f"it are no fair test here; the fashion and cifar10-paper presets train to convergence.")


# The metric whose numbers pct/pp write while a transformer study's claims and tables are made
# (None: classifier errors, in percent).
_METRIC: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("metric", default=None)


@contextlib.contextmanager
def numbers_of(study: Study):
    token = _METRIC.set(study.metric)
    try:
        yield
    finally:
        _METRIC.reset(token)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%" if _METRIC.get() is None else f"{x:.5g}"


def pp(x: float) -> str:
    return f"{100 * x:+.2f} pp" if _METRIC.get() is None else f"{x:+.3g}"


def gap(x: float) -> str:
    """An unsigned difference of errors (pp), or of the metric."""
    return f"{100 * x:.2f} pp" if _METRIC.get() is None else f"{x:.3g}"


def on_metric(text: str, study: Study) -> str:
    """A claim's text with "error" read as the study's metric (unchanged for classifiers)."""
    metric = study.metric
    return text if not metric else re.sub(r"\b(test )?error\b", metric["label"], text)


def chance_error(study: Study) -> float | None:
    """The error of guessing: 1 - 1/classes (None where the number of classes is unknown); with a
    metric, the metric's chance (ln V for an LM)."""
    if study.metric:
        return study.metric.get("chance")
    n = study.dataset.get("num_classes")
    return 1.0 - 1.0 / n if n else None


def metric_axis(study: Study) -> "F.Axis":
    """The y axis of fig. 3 and 5: test error, or the study's metric."""
    metric = study.metric
    if not metric:
        return F.ERROR
    if metric["name"] == "lm":
        return F.Axis("LM loss", "LM loss (next-token cross-entropy, nats)", 1.0, "{:.3f}", "ln V = {:.2f}")
    return F.Axis("1 − cosine", "1 − cosine to the full model's embedding", 1.0, "{:.4f}", "{:.2f}")


def path_summary(p: dict[str, Any]) -> dict[str, Any]:
    """Totals per length (C(n, k) x mean), the effective range and its share of all paths, the share
    of the total gradient per length, and the gradient-weighted mean path length."""
    n = p["n"]
    totals = paths.total_gradient(n, dict(zip(p["lengths"], p["mean"])))
    eff = paths.effective_range(n, totals, RULES["effective_share"])
    whole = sum(totals.values())
    weights = {k: t / whole for k, t in totals.items()}
    return dict(total=[totals[k] for k in p["lengths"]], totals=totals, effective=tuple(eff["lengths"]),
                held=eff["gradient_share"], paths_share=eff["path_share"], weights=weights,
                mean_length=sum(k * w for k, w in weights.items()))


def effective_left(n: int, d: int, s: dict[str, Any]) -> float:
    """Share of the effective range's gradient carried by paths that deleting d blocks leaves intact."""
    return paths.effective_surviving(n, d, s["totals"], s["effective"])


# ---------------------------------------------------------------------------------------------
# Claims

@dataclass
class Claim:
    key: str
    paper: str  # the claim of the paper, as a measurable statement
    measured: str = ""
    verdict: str = MISSING
    rule: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)


def _label(study: Study, role: str) -> str:
    return study.models.get(role, {}).get("label", role)


def claim_single(study: Study) -> Claim:
    c = Claim("single", "Deleting one block of a residual network that does not downsample barely changes "
                        "its test error (fig. 3).")
    s, m = study.single.get("resnet"), study.models.get("resnet")
    if not s or not m:
        return c
    base, chance = s["baseline"], chance_error(study)
    if chance is None:
        return c
    inc = [(i, e - base) for i, (e, d) in enumerate(zip(s["errors"], m["downsample"])) if e is not None and not d]
    down = [e - base for e, d in zip(s["errors"], m["downsample"]) if e is not None and d]
    i_max, worst = max(inc, key=lambda t: t[1])
    median = statistics.median(v for _, v in inc)
    limit = RULES["single_max_gap"] * (chance - base)
    c.numbers = dict(baseline=base, largest_increase=worst, largest_block=i_max, median_increase=median,
                     limit=limit, downsampling_largest=max(down) if down else None)
    c.measured = (f"{_label(study, 'resnet')}, error {pct(base)} whole. Over its {len(inc)} non-downsampling "
                  f"blocks the largest increase is {pp(worst)} (block {i_max}), the median {pp(median)}"
                  + (f"; the {len(down)} downsampling blocks cost up to {pp(max(down))}." if down else "."))
    c.rule = (f"holds if the largest increase is at most {gap(limit)} ({100 * RULES['single_max_gap']:.0f}% "
              f"of the way from {pct(base)} to chance, {pct(chance)}); partly if the median is.")
    c.verdict = HOLDS if worst <= limit else PARTLY if median <= limit else FAILS
    return c


def claim_vgg(study: Study) -> Claim:
    c = Claim("vgg", "Deleting any one layer of a VGG network (no skip connections) sends its error to "
                     "chance (fig. 3).")
    s = study.single.get("vgg")
    if not s:
        return c
    base, chance = s["baseline"], chance_error(study)
    errs = [(i, e) for i, e in enumerate(s["errors"]) if e is not None]
    i_min, lowest = min(errs, key=lambda t: t[1])
    median = statistics.median(e for _, e in errs)
    floor = base + RULES["vgg_min_gap"] * (chance - base)
    res = study.single.get("resnet")
    c.numbers = dict(baseline=base, lowest=lowest, lowest_layer=i_min, median=median, chance=chance, floor=floor)
    c.measured = (f"{_label(study, 'vgg')}, error {pct(base)} whole. After deleting one of its {len(errs)} "
                  f"deletable layers the error is at least {pct(lowest)} (layer {i_min}), median {pct(median)}; "
                  f"chance is {pct(chance)}.")
    if res:
        worst_res = max(e for e in res["errors"] if e is not None)
        c.measured += f" The residual net's worst single deletion: {pct(worst_res)}."
        c.numbers["residual_worst"] = worst_res
    c.rule = (f"holds if every single deletion gives at least {pct(floor)} (half way from the whole net to "
              f"chance); partly if the median does.")
    c.verdict = HOLDS if lowest >= floor else PARTLY if median >= floor else FAILS
    return c


def claim_random(study: Study) -> Claim:
    c = Claim("random", "Deleting more and more random blocks raises the error smoothly, with no sudden "
                        "collapse (fig. 5a).")
    r = study.random.get("resnet")
    if not r or len(r["k"]) < 3:
        return c
    ks, mean = list(r["k"]), list(r["mean"])
    rho, p = sps.spearmanr(ks, mean)
    base = study.single.get("resnet", {}).get("baseline", study.models["resnet"].get("error"))
    curve = ([base] if base is not None else []) + mean
    steps = [b - a for a, b in zip(curve, curve[1:])]
    rise = curve[-1] - curve[0]
    big = max(steps) / rise if rise > 0 else math.inf
    c.numbers = dict(spearman_rho=rho, p=p, largest_step_share=big, k_max=ks[-1], error_at_k_max=mean[-1])
    c.measured = (f"{_label(study, 'resnet')}, {r.get('n_samples', '?')} random sets per k for k = {ks[0]}–{ks[-1]}: "
                  f"mean error {pct(mean[0])} at k = {ks[0]} to {pct(mean[-1])} at k = {ks[-1]}; Spearman ρ(k, mean "
                  f"error) = {rho:.3f}; the largest step between consecutive k is {100 * big:.0f}% of the whole rise.")
    c.rule = (f"holds if ρ ≥ {RULES['random_rho']} and no step exceeds {100 * RULES['random_max_step']:.0f}% "
              f"of the rise; partly if only ρ does.")
    ok_rho = rho >= RULES["random_rho"]
    c.verdict = HOLDS if ok_rho and big <= RULES["random_max_step"] else PARTLY if ok_rho else FAILS
    return c


def claim_reorder(study: Study) -> Claim:
    c = Claim("reorder", "Reordering blocks hurts gradually: the error grows as the order moves away from the "
                         "original, measured by Kendall τ (fig. 5b).")
    r = study.reorder.get("resnet")
    if not r or len(r["tau"]) < 5:
        return c
    rho, p = sps.spearmanr(r["tau"], r["error"])
    near = [e for t, e in zip(r["tau"], r["error"]) if t >= 0.9]
    far_t = sorted(r["tau"])[: max(1, len(r["tau"]) // 10)]
    far = [e for t, e in zip(r["tau"], r["error"]) if t <= far_t[-1]]
    c.numbers = dict(spearman_rho=rho, p=p, n_orders=len(r["tau"]), tau_min=min(r["tau"]),
                     mean_error_tau_ge_0_9=statistics.mean(near) if near else None, mean_error_lowest_tau=statistics.mean(far))
    c.measured = (f"{_label(study, 'resnet')}, {len(r['tau'])} shuffled orders with τ from {min(r['tau']):.2f} to "
                  f"{max(r['tau']):.2f}: Spearman ρ(τ, error) = {rho:.3f} (p = {p:.1e}); mean error "
                  + (f"{pct(statistics.mean(near))} for τ ≥ 0.9, " if near else "")
                  + f"{pct(statistics.mean(far))} for the most shuffled tenth (τ ≤ {far_t[-1]:.2f}); "
                  f"original order {pct(r['baseline'])}.")
    c.rule = f"holds if ρ ≤ {RULES['reorder_rho']} with p < 0.01; partly if ρ < 0 with p < 0.01."
    c.verdict = (HOLDS if rho <= RULES["reorder_rho"] and p < 0.01 else PARTLY if rho < 0 and p < 0.01 else FAILS)
    return c


def claim_gradient(study: Study) -> Claim:
    c = Claim("gradient", "The gradient a single path carries to the input falls exponentially with its "
                          "length (fig. 6b).")
    p = study.paths
    if not p or len(p["lengths"]) < 3:
        return c
    ks, mean = list(p["lengths"]), list(p["mean"])
    rho, _ = sps.spearmanr(ks, mean)
    good = [(k, m) for k, m in zip(ks, mean) if m > 0]
    slope = sps.linregress([k for k, _ in good], [math.log10(m) for _, m in good]).slope
    c.numbers = dict(spearman_rho=rho, factor_per_block=10 ** slope)
    c.measured = (f"{p.get('samples', '?')} sampled paths per length, k = {ks[0]}–{ks[-1]}: the mean gradient norm "
                  f"goes from {mean[0]:.3g} to {mean[-1]:.3g}; a log-linear fit gives ×{10 ** slope:.3g} per extra "
                  f"block; Spearman ρ(k, gradient) = {rho:.3f}.")
    c.rule = f"holds if ρ ≤ {RULES['grad_rho']} and the fitted factor per block is below 1."
    c.verdict = HOLDS if rho <= RULES["grad_rho"] and slope < 0 else PARTLY if slope < 0 else FAILS
    return c


def claim_effective(study: Study) -> Claim:
    c = Claim("effective", "Almost all of the gradient comes from short paths: the effective range lies below "
                           "the typical path length n/2 and holds a small share of the paths (paper, 54 blocks: "
                           "5–17 blocks, 0.45% of paths).")
    p = study.paths
    if not p:
        return c
    s = path_summary(p)
    n, (lo, hi) = p["n"], s["effective"]
    c.numbers = dict(n=n, low=lo, high=hi, gradient_share=s["held"], paths_share=s["paths_share"],
                     weighted_mean_length=s["mean_length"])
    c.measured = (f"n = {n} blocks: lengths {lo}–{hi} carry {100 * s['held']:.1f}% of the total gradient and are "
                  f"{100 * s['paths_share']:.3g}% of the 2^{n} paths; the gradient-weighted mean length is "
                  f"{s['mean_length']:.1f} against {n / 2:g} for all paths.")
    c.rule = (f"holds if the whole range lies below n/2 = {n / 2:g}; partly if the gradient-weighted mean "
              f"length does.")
    c.verdict = HOLDS if hi < n / 2 else PARTLY if s["mean_length"] < n / 2 else FAILS
    return c


def claim_surviving(study: Study) -> Claim:
    c = Claim("surviving", "Deleting k blocks leaves 2^-k of the paths; the error follows the loss of the short, "
                           "effective paths (fig. 7).")
    p, r = study.paths, study.random.get("resnet")
    if not p or not r or len(r["k"]) < 3:
        return c
    s = path_summary(p)
    n = p["n"]
    lost = [1 - effective_left(n, k, s) for k in r["k"]]
    fit = sps.linregress(lost, r["mean"])
    one = effective_left(n, 1, s)
    c.numbers = dict(r2=fit.rvalue ** 2, effective_left_after_1=one, slope=fit.slope)
    c.measured = (f"Deleting 1 of {n} blocks leaves 50% of all paths but {100 * one:.1f}% of the effective "
                  f"gradient; across k = {r['k'][0]}–{r['k'][-1]} the mean error is a straight line in the effective "
                  f"gradient lost with R² = {fit.rvalue ** 2:.3f} (slope {fit.slope:.2f} error per unit lost).")
    if p.get("surviving_checked"):
        c.measured += (f" Paths counted in each of the {p['surviving_checked']} random lesions that were run: "
                       f"{p['surviving_match']} of {p['surviving_checked']} match C(n−d, x)/C(n, x) exactly.")
        c.numbers["surviving_match"] = [p["surviving_match"], p["surviving_checked"]]
    c.rule = f"holds if R² ≥ {RULES['surviving_r2']} with a positive slope."
    c.verdict = HOLDS if fit.rvalue ** 2 >= RULES["surviving_r2"] and fit.slope > 0 else (
        PARTLY if fit.slope > 0 else FAILS)
    return c


def convergence(model: dict[str, Any]) -> tuple[bool, str]:
    """(trained to convergence?, why) by RULES["converged_loss_change"], from the per-epoch training loss."""
    recorded = (model.get("training") or {}).get("train_loss")
    if recorded is None and model.get("source"):  # a brought net: its training happened elsewhere
        return False, (f"respaths has no record of how {model.get('label', '?')} was trained, so whether it "
                       f"converged is unknown")
    losses = [x for x in recorded or [] if x is not None]
    if len(losses) < 2:
        return False, (f"{model.get('label', '?')} trained {len(losses)} epoch(s) on record, too few to tell "
                       f"whether its training loss has stopped falling")
    change = (losses[-2] - losses[-1]) / abs(losses[-2]) if losses[-2] else 0.0
    limit = RULES["converged_loss_change"]
    return change <= limit, (f"{model.get('label', '?')}'s training loss fell {100 * change:.1f}% over its last "
                             f"epoch ({losses[-2]:.4g} to {losses[-1]:.4g}; converged means at most "
                             f"{100 * limit:.0f}%)")


def judge_only_if_converged(c: Claim, study: Study, roles: Sequence[str]) -> Claim:
    """A claim comparing training procedures reads inconclusive unless every net it compares converged."""
    if c.verdict == MISSING:
        return c
    verdicts = [convergence(study.models.get(r, {})) for r in roles]
    c.numbers["converged"] = {r: ok for r, (ok, _) in zip(roles, verdicts)}
    if all(ok for ok, _ in verdicts):
        return c
    c.numbers["verdict_if_converged"] = c.verdict
    c.verdict = INCONCLUSIVE
    c.measured += (" Not judged — not trained to convergence: "
                   + "; ".join(why for ok, why in verdicts if not ok)
                   + f". On these numbers alone it would read \"{c.numbers['verdict_if_converged']}\".")
    return c


def claim_fixed(study: Study) -> Claim:
    c = Claim("fixed", "Training only the effective paths — m of the n blocks active per mini-batch (paper: "
                       "23 of 54) — gives about the error of the normally trained net.")
    d, mf, mr = study.paired.get("fixed-vs-resnet"), study.models.get("fixed"), study.models.get("resnet")
    if not d or not mf or not mr:
        return c
    lo, hi = d["ci"]
    c.numbers = dict(fixed=mf["error"], full=mr["error"], diff=d["diff"], ci=[lo, hi], m=mf.get("fixed_m"))
    c.measured = (f"{mf['label']} (of {mf['blocks']} blocks): {pct(mf['error'])}; "
                  f"{mr['label']}: {pct(mr['error'])}; difference {pp(d['diff'])}, paired 95% CI "
                  f"[{pp(lo)}, {pp(hi)}] on {d['n']:,} test images.")
    margin = RULES["fixed_margin"]
    c.rule = f"holds if the CI's upper end is at most +{100 * margin:.0f} pp; partly if the difference is."
    c.verdict = HOLDS if hi <= margin else PARTLY if d["diff"] <= margin else FAILS
    return judge_only_if_converged(c, study, ("fixed", "resnet"))


def claim_stochastic(study: Study) -> Claim:
    c = Claim("stochastic", "A net trained with stochastic depth is (slightly) more resilient to deleting "
                            "blocks than the same net trained normally (fig. 8).")
    single, rand = study.single, study.random
    if "stochastic" not in single or "resnet" not in single:
        return c
    res = study.paired.get("stochastic-vs-resnet", {}).get("resilience") or {}
    if res.get("mean_increase_delta") is not None:  # paired over blocks, from respaths.experiments.compare
        delta, (lo, hi) = res["mean_increase_delta"], res["ci"]
    else:
        def mean_increase(role):
            s = single[role]
            return statistics.mean(e - s["baseline"] for e in s["errors"] if e is not None)
        delta, lo, hi = mean_increase("stochastic") - mean_increase("resnet"), None, None
    c.numbers = dict(single_delta=delta, ci=[lo, hi])
    ci = f", 95% CI over blocks [{pp(lo)}, {pp(hi)}]" if lo is not None else ""
    c.measured = (f"deleting one block costs {pp(delta)} more with stochastic depth than without, on average "
                  f"over the blocks{ci} (whole nets: {pct(single['stochastic']['baseline'])} vs "
                  f"{pct(single['resnet']['baseline'])})")
    random_better = None
    if "stochastic" in rand and "resnet" in rand:
        common = [k for k in rand["stochastic"]["k"] if k in rand["resnet"]["k"]]
        if common:
            def rise(role, k):
                r = rand[role]
                return r["mean"][r["k"].index(k)] - single[role]["baseline"]
            diffs = [rise("stochastic", k) - rise("resnet", k) for k in common]
            random_better = sum(d < 0 for d in diffs)
            c.numbers.update(random_k=common, random_delta=diffs)
            c.measured += (f"; with k random blocks deleted the rise over the whole net is smaller with stochastic "
                           f"depth for {random_better} of {len(common)} values of k (mean difference "
                           f"{pp(statistics.mean(diffs))})")
            random_better = random_better > len(common) / 2
    c.measured += "."
    c.rule = ("holds if the single-deletion cost is lower with stochastic depth, its CI below 0, and the random-k "
              "rise smaller for most k; partly if the single-deletion cost or the random-k rise is lower.")
    lower = delta < 0
    sure = lower and hi is not None and hi < 0
    if sure and random_better is not False:
        c.verdict = HOLDS
    elif lower or random_better:
        c.verdict = PARTLY
    else:
        c.verdict = FAILS
    return judge_only_if_converged(c, study, ("stochastic", "resnet"))


CLAIMS: list[Callable[[Study], Claim]] = [claim_single, claim_vgg, claim_random, claim_reorder, claim_gradient,
                                          claim_effective, claim_surviving, claim_fixed, claim_stochastic]


def claims(study: Study) -> list[Claim]:
    with numbers_of(study):
        out = [f(study) for f in CLAIMS]
    for c in out:
        c.measured, c.rule = on_metric(c.measured, study), on_metric(c.rule, study)
    if study.kind == "study":
        for c in out:
            if c.key in ("fixed", "stochastic") and c.verdict == MISSING:
                c.verdict = NOT_RUN
                c.measured = (f"respaths study trains no nets; give the {c.key} net with --compare {c.key}=MODEL, "
                              f"or train it with respaths reproduce.")
    return out


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
        out.append(("fig3-single-deletion", f"{axis.title} after deleting each block alone; downsampling blocks "
                    "are marked, the dashed line is the whole net.",
                    F.single_deletion([panel(r) for r in roles], subtitle(study, roles), chance, axis=axis)))
    if "resnet" in rand:
        r = rand["resnet"]
        out.append(("fig5a-random-deletion", f"Mean {noun} and its spread over random sets of k deleted blocks.",
                    F.random_deletion([dict(label=m["resnet"]["label"], k=r["k"], mean=r["mean"], std=r["std"],
                                            n_samples=r.get("n_samples"),
                                            baseline=single.get("resnet", {}).get("baseline"))],
                                      subtitle(study, ["resnet"]), chance, axis=axis)))
    if "resnet" in study.reorder:
        r = study.reorder["resnet"]
        out.append(("fig5b-reorder", "Each point is one shuffled order of the blocks (only blocks of equal shape "
                    "swapped); the line is the mean per τ bin.",
                    F.reorder([dict(label=m["resnet"]["label"], tau=r["tau"], error=r["error"],
                                    baseline=r["baseline"])], subtitle(study, ["resnet"]), axis=axis)))
    p = study.paths
    if p:
        s = path_summary(p)
        n = p["n"]
        imgs = f"gradients on {p['n_images']:,} training images" if p.get("n_images") else None
        out.append(("fig6-paths", "Path lengths, the gradient one path carries by length (log scale), and the "
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
        out.append(("fig7-surviving-paths", "Share of the paths of each length that survive d deletions, and the "
                    "effective gradient left against the measured error.",
                    F.surviving_paths(n, ds, subtitle(study, ["resnet"]), s["effective"], measured, axis=axis)))
    sd_roles = [r for r in ("resnet", "stochastic", "fixed") if r in single]
    if "stochastic" in single and "resnet" in single:
        series = [dict(label=m[r]["label"], k=rand[r]["k"], mean=rand[r]["mean"], std=rand[r]["std"])
                  for r in sd_roles if r in rand]
        out.append(("fig8-stochastic-depth", "Error increase from deleting each block for the same architecture "
                    "trained normally, with stochastic depth and with fixed m; and k random deletions.",
                    F.stochastic_depth([panel(r) for r in sd_roles], sd_subtitle(study, sd_roles),
                                       random=series if len(series) > 1 else None)))
    out += layer_figures(Path(study.dir))
    return out


def layer_figures(run_dir: Path) -> list[tuple[str, str, Any]]:
    """Figures of `respaths layers` results saved in the run as results/layers-*.json (transformers)."""
    out = []
    for path in sorted((run_dir / "results").glob("layers-*.json")):
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
            cells.append(f"<td>{_e(cl.measured or 'not measured in this run')}{rule}</td>"
                         f"<td class='v {VCLASS[cl.verdict]}'>{_e(cl.verdict)}</td>")
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
                link = f" <a href='figures/{stem}.svg'>SVG</a>" if one else ""
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
    studies = [load_study(Path(d)) if (Path(d) / "run.json").exists() or not Path(d).is_dir()
               else load_results_folder(Path(d)) for d in dirs]
    if out is None and len(studies) > 1:
        raise UserError("several runs make one report: say where it goes with --out FILE.")
    figs = []
    for s in studies:
        drawn = {}
        for stem, caption, fig in make_figures(s):
            png = (F.save(fig, Path(s.dir) / "figures" / stem)["png"] if len(studies) == 1
                   else F.render(fig, "png"))
            drawn[stem] = (caption, png)
        figs.append(drawn)
    out = Path(out) if out else Path(studies[0].dir) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, render_html(studies, figs))
    return out
