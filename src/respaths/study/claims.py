"""The paper's claims, each checked with numbers by a rule fixed before any run (RULES), on a `Study`
(respaths.study.read); respaths.study.report puts them in the HTML report beside the figures.

Verdicts: holds, partly, does not hold, not measured, inconclusive (a training claim whose nets did not
finish training by the rule in `convergence`), not run (a study trains nothing). Errors are fractions;
pct/pp write percent and percentage points, or the metric's own units in a transformer's study.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from scipy import stats as sps

from . import figures as F
from .. import paths, stats
from ..metrics import ClassifierError, Metric
from ..models import blocks_of
from .read import Study

HOLDS, PARTLY, FAILS, MISSING = "holds", "partly", "does not hold", "not measured"
INCONCLUSIVE = "inconclusive"
NOT_RUN = "not run"  # a study of brought nets trains none, so the training claims have nothing to judge

# The verdict rules, fixed before looking at any result. Shares of the gap between the whole net's
# error and chance make one rule fit datasets of any difficulty.
RULES = {
    "single_gap": 0.05,        # residual: one non-downsampling block deleted costs <= 5% of the gap to chance
    "single_share": 0.9,       # ... for at least this share of those blocks: the paper says "mostly", not "always"
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
    "single_gap": "a single-deletion increase (non-downsampling block) within this share of chance minus whole-net "
                  "error counts as barely changing the error",
    "single_share": "share of the non-downsampling blocks whose deletion must stay within single_gap for the claim "
                    "to hold (it reads partly when only the median does)",
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


# The paper's protocol (Veit et al.: all 10,000 CIFAR-10 test images, 20 random sets per k, 1,000 paths
# per length); an experiment run smaller gets a note saying what its numbers cannot resolve.
PAPER_SIZES = {"test_images": 10_000, "random_samples": 20, "path_samples": 1000}


def budget_note(study: Study) -> str | None:
    """When the experiments ran smaller than the paper's protocol: say so, and what their numbers cannot
    resolve (the interval of one error, which steps of the random-k curve stand out of their noise, how
    well a length's path gradient is known), from the study's own numbers; None at the paper's sizes."""
    with numbers_of(study):
        return _budget_note(study)


def sets_asked(study: Study) -> int | None:
    """The random sets per k the run asked for (run.json's settings; a study keeps them in its budget)."""
    settings = study.preset_settings or {}
    asked = (settings.get("budget") or settings).get("random_samples")
    return asked if isinstance(asked, int) else None


def sets_ran(study: Study, r: dict) -> int:
    """The random sets per k that ran: those asked for where a k had fewer (all that exist), else the
    fewest any k had."""
    n, asked = r.get("n_samples") or 0, sets_asked(study)
    return asked if asked and n < asked else n


def sets_per_k(study: Study, r: dict) -> str:
    """How many random sets each k had. The samples of one k are distinct, so where fewer sets exist
    than were asked for (k = 1 of a 15-block net: 15), that k has all of them: the budget asked is
    not smaller for it."""
    n, asked = r.get("n_samples"), sets_asked(study)
    if asked and n is not None and n < asked:
        return f"{asked} random sets per k ({n} at a k where only {n} distinct sets exist)"
    return f"{n if n is not None else '?'} random sets per k"


def _budget_note(study: Study) -> str | None:
    r, p = study.random.get("resnet"), study.paths
    n_test = study.dataset.get("n_test") or 0
    small = []
    if not study.metric and 0 < n_test < PAPER_SIZES["test_images"]:
        small.append(f"{n_test:,} test images")
    if r and 0 < sets_ran(study, r) < PAPER_SIZES["random_samples"]:
        small.append(sets_per_k(study, r))
    if p and 0 < (p.get("samples") or 0) < PAPER_SIZES["path_samples"]:
        small.append(f"{p['samples']} paths per length")
    if not small:
        return None
    said = []
    single = study.single.get("resnet")
    if single and not study.metric and n_test:
        base = single["baseline"]
        lo, hi = stats.wilson_ci(round(base * n_test), n_test)
        said.append(f"one error on {n_test:,} images is known to about ±{gap((hi - lo) / 2)} (95% Wilson interval at "
                    f"{pct(base)}), so single-deletion increases smaller than that are not resolved")
    n = r.get("n_samples") or 0 if r else 0
    if r and n > 1 and len(r["k"]) > 1:
        # the standard error of a mean over n sets (std is over the sets, without Bessel's correction)
        se = [sd * math.sqrt(n / (n - 1)) / math.sqrt(n) for sd in r["std"]]
        pairs = list(zip(r["mean"], r["mean"][1:], se, se[1:]))
        resolved = sum(abs(b - a) > 2 * math.hypot(sa, sb) for a, b, sa, sb in pairs)
        said.append(f"each random-k mean over {n} sets has a standard error of up to {gap(max(se))}, and "
                    + (f"every one of the {len(pairs)} steps between consecutive k exceeds twice the standard error "
                       f"of its difference" if resolved == len(pairs) else
                       f"only {resolved} of the {len(pairs)} steps between consecutive k "
                       f"{'exceeds' if resolved == 1 else 'exceed'} twice the standard error of its difference, so "
                       f"ρ(k, mean error) and the largest step are not resolved"))
    if p and p.get("samples"):
        widths = [(h - l) / 2 / m for m, l, h in zip(p["mean"], p["low"], p["high"]) if m > 0 and h > l]
        if widths:
            said.append(f"a length's mean path gradient, from {p['samples']} sampled paths, is known to about "
                        f"±{100 * statistics.median(widths):.0f}% (median 95% interval)")
    bigger = ("respaths study --budget paper runs them" if study.kind == "study" else
              "the fashion and cifar10-paper presets run them")
    return (f"A small budget ({', '.join(small)}; the paper's protocol has all 10,000 test images, 20 random sets "
            f"per k and 1,000 paths per length, and {bigger}): " + "; ".join(said) + ".")


# The metric whose numbers pct/pp write while a study's claims and tables are made (the classifier's
# test error, in percent, outside numbers_of).
_METRIC: contextvars.ContextVar[Metric] = contextvars.ContextVar("metric", default=ClassifierError())


@contextlib.contextmanager
def numbers_of(study: Study):
    token = _METRIC.set(study.scored_by())
    try:
        yield
    finally:
        _METRIC.reset(token)


def pct(x: float) -> str:
    return _METRIC.get().text(x)


def pp(x: float) -> str:
    return _METRIC.get().change(x)


def gap(x: float) -> str:
    """An unsigned difference of errors (pp), or of the metric."""
    return _METRIC.get().gap(x)


def on_metric(text: str, study: Study) -> str:
    """A claim's text, written of the test error, with "error" read as the study's metric."""
    metric = study.scored_by()
    return text if isinstance(metric, ClassifierError) else re.sub(r"\b(test )?error\b", metric.label, text)


def chance_error(study: Study) -> float | None:
    """The study's metric for a model that knows nothing, as the run recorded it; for the classifier's
    test error, the error of guessing (None where the number of classes is unknown)."""
    if study.metric:
        return study.metric.get("chance")
    return ClassifierError.guessing(study.dataset.get("num_classes"))


def metric_axis(study: Study) -> "F.Axis":
    """The y axis of fig. 3 and 5: the study's metric, larger = worse (the test error for classifiers)."""
    m = study.scored_by()
    return F.Axis(m.label[:1].upper() + m.label[1:], m.axis_label, m.scale, m.value_format, m.chance_format)


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


def values(ks: Sequence[int]) -> str:
    """The values of k that ran, each named: "1–20" for a full range, else "1, 2, 4, 6, 8, 10, 12"."""
    ks = list(ks)
    if len(ks) >= 3 and ks == list(range(ks[0], ks[-1] + 1)):
        return f"{ks[0]}–{ks[-1]}"
    return ", ".join(map(str, ks))


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
    beside: str = ""  # the few numbers the report prints under the verdict


def unmeasurable(c: Claim, study: Study, statistic: str, **series: Sequence[float]) -> bool:
    """Whether `statistic` cannot be computed because one of the named series holds a single value (a
    correlation or a fitted line needs two); if so the claim says so and stays "not measured"."""
    for name, values in series.items():
        if len(set(values)) < 2:
            n = study.dataset.get("n_test") if isinstance(getattr(study, "dataset", None), dict) else None
            c.measured = (f"not measured: {name} is the same ({values[0]:.4g}) everywhere, so {statistic} is "
                          f"undefined" + (f" (only {n} test examples; give more with --limit)." if n else "."))
            return True
    return False


def too_few(c: Claim, result: dict[str, Any] | None, key: str, what: str, least: int) -> Claim:
    """The claim, "not measured" because its result has fewer than `least` points (said, where it ran)."""
    if result:
        c.measured = f"not measured: only {len(result[key])} {what} were measured, and the rule needs at least {least}."
    return c


def _label(study: Study, role: str) -> str:
    return study.models.get(role, {}).get("label", role)


def claim_single(study: Study) -> Claim:
    c = Claim("single", "Deleting one block of a residual network that does not downsample mostly barely changes "
                        "its test error (fig. 3).")
    s, m = study.single.get("resnet"), study.models.get("resnet")
    if not s or not m:
        return c
    base, chance = s["baseline"], chance_error(study)
    if chance is None:
        return c
    inc = [(i, e - base) for i, (e, d) in enumerate(zip(s["errors"], m["downsample"])) if e is not None and not d]
    if not inc:
        return c
    down = [e - base for e, d in zip(s["errors"], m["downsample"]) if e is not None and d]
    i_max, worst = max(inc, key=lambda t: t[1])
    median = statistics.median(v for _, v in inc)
    limit = RULES["single_gap"] * (chance - base)
    within = sum(v <= limit for _, v in inc)
    share = within / len(inc)
    c.numbers = dict(baseline=base, largest_increase=worst, largest_block=i_max, median_increase=median,
                     limit=limit, within=within, blocks=len(inc), share_within=share,
                     downsampling_largest=max(down) if down else None)
    c.measured = (f"{_label(study, 'resnet')}, error {pct(base)} whole. Over its {len(inc)} non-downsampling "
                  f"blocks the median increase is {pp(median)}, {within} of {len(inc)} stay within {gap(limit)}, "
                  f"the largest is {pp(worst)} (block {i_max})"
                  + (f"; the {len(down)} downsampling blocks cost up to {pp(max(down))}." if down else "."))
    c.rule = (f"holds if at least {100 * RULES['single_share']:.0f}% of the non-downsampling blocks cost at most "
              f"{gap(limit)} ({100 * RULES['single_gap']:.0f}% of the way from {pct(base)} to chance, "
              f"{pct(chance)}); partly if the median does.")
    c.beside = (f"median {pp(median)}; {within} of {len(inc)} within ({100 * share:.0f}%); "
                f"worst {pp(worst)} (block {i_max})")
    c.verdict = HOLDS if share >= RULES["single_share"] else PARTLY if median <= limit else FAILS
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
        return too_few(c, r, "k", "values of k", 3)
    ks, mean = list(r["k"]), list(r["mean"])
    if unmeasurable(c, study, "Spearman's ρ", **{"the mean error over k": mean}):
        return c
    rho, p = sps.spearmanr(ks, mean)
    base = study.single.get("resnet", {}).get("baseline", study.models["resnet"].get("error"))
    curve = ([base] if base is not None else []) + mean
    steps = [b - a for a, b in zip(curve, curve[1:])]
    rise = curve[-1] - curve[0]
    big = max(steps) / rise if rise > 0 else math.inf
    c.numbers = dict(spearman_rho=rho, p=p, largest_step_share=big, k_max=ks[-1], error_at_k_max=mean[-1])
    largest = (f"the largest step between consecutive k is {100 * big:.0f}% of the whole rise" if rise > 0 else
               "no rise: the mean error at the largest k is not above " + ("the whole net's" if base is not None
                                                                           else f"that at k = {ks[0]}"))
    c.measured = (f"{_label(study, 'resnet')}, {sets_per_k(study, r)} for k = {values(ks)}: "
                  f"mean error {pct(mean[0])} at k = {ks[0]} to {pct(mean[-1])} at k = {ks[-1]}; Spearman ρ(k, mean "
                  f"error) = {rho:.3f}; {largest}.")
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
        return too_few(c, r, "tau", "reorderings", 5)
    if unmeasurable(c, study, "Spearman's ρ", **{"Kendall τ": r["tau"], "the error": r["error"]}):
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
        return too_few(c, p, "lengths", "path lengths", 3)
    ks, mean = list(p["lengths"]), list(p["mean"])
    if unmeasurable(c, study, "Spearman's ρ", **{"the mean gradient": mean}):
        return c
    rho, _ = sps.spearmanr(ks, mean)
    good = [(k, m) for k, m in zip(ks, mean) if m > 0]
    slope = sps.linregress([k for k, _ in good], [math.log10(m) for _, m in good]).slope
    c.numbers = dict(spearman_rho=rho, factor_per_block=10 ** slope)
    c.measured = (f"{p.get('samples', '?')} sampled paths per length, k = {values(ks)}: the mean gradient norm "
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
        return too_few(c, r if p else None, "k", "values of k", 3)
    s = path_summary(p)
    n = p["n"]
    lost = [1 - effective_left(n, k, s) for k in r["k"]]
    if unmeasurable(c, study, "R² of a straight line", **{"the effective gradient lost": lost,
                                                          "the mean error over k": r["mean"]}):
        return c
    fit = sps.linregress(lost, r["mean"])
    one = effective_left(n, 1, s)
    c.numbers = dict(r2=fit.rvalue ** 2, effective_left_after_1=one, slope=fit.slope)
    c.measured = (f"Deleting 1 of {n} blocks leaves 50% of all paths but {100 * one:.1f}% of the effective "
                  f"gradient; across k = {values(r['k'])} the mean error is a straight line in the effective "
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
    if recorded is None:
        return False, (f"{model.get('label', '?')}'s training losses are not on record (no metrics.csv), so "
                       f"whether it converged is unknown")
    losses = [x for x in recorded if x is not None]
    if len(losses) < 2:
        return False, (f"{model.get('label', '?')} trained {len(losses)} epoch(s) on record, too few to tell "
                       f"whether its training loss has stopped falling")
    change = (losses[-2] - losses[-1]) / abs(losses[-2]) if losses[-2] else 0.0
    limit = RULES["converged_loss_change"]
    return change <= limit, (f"{model.get('label', '?')}'s training loss fell {100 * change:.1f}% over its last "
                             f"epoch ({losses[-2]:.4g} to {losses[-1]:.4g}; converged means at most "
                             f"{100 * limit:.0f}%)")


def judge_only_if_converged(c: Claim, study: Study, roles: Sequence[str]) -> Claim:
    """A claim on nets that did not finish training reads inconclusive: its numbers stay, with the verdict
    they alone would give."""
    if c.verdict in (MISSING, NOT_RUN):
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
    c.beside = "; ".join(x for x in (f"not trained to convergence; alone these numbers read "
                                     f"\"{c.numbers['verdict_if_converged']}\"", c.beside) if x)
    return c


# The claims about how a trained net behaves at test time, and the net each is about.
TEST_TIME_ROLE = {"single": "resnet", "vgg": "vgg", "random": "resnet", "reorder": "resnet", "gradient": "resnet",
                  "effective": "resnet", "surviving": "resnet"}


def trained_here(study: Study, role: str) -> bool:
    """Whether respaths trained the net itself, so that its training record tells whether it converged: a
    reproduce run's nets, and brought respaths checkpoints whose training losses the study recorded."""
    m = study.models.get(role) or {}
    if (m.get("training") or {}).get("train_loss") is not None:
        return True
    return study.kind == "reproduce" and not m.get("source")


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
        # a test-time claim is a claim about a trained net: one that respaths trained and that had not
        # converged is no evidence for or against the paper (the demo's one-epoch nets)
        role = TEST_TIME_ROLE.get(c.key)
        if role and trained_here(study, role):
            judge_only_if_converged(c, study, (role,))
        c.measured, c.rule = on_metric(c.measured, study), on_metric(c.rule, study)
    if study.kind == "study":
        for c in out:
            if c.key in ("fixed", "stochastic") and c.verdict == MISSING:
                c.verdict = NOT_RUN
                c.measured = (f"respaths study trains no nets; give the {c.key} net with --compare {c.key}=MODEL, "
                              f"or train it with respaths reproduce.")
    return out
