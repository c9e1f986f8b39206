"""A synthetic run directory, written with the real result writers and record schemas (the report's
and the claims' tests read it)."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from respaths import paths
from respaths.experiments.compare import random_summary
from respaths.study.reproduce import PRESETS
from respaths.io.results import ResultStore


# ---------------------------------------------------------------------------------------------
# A synthetic run directory, written with the real result writers and record schemas

N = 9
DOWN = [False, False, False, True, False, False, True, False, False]



def write_results(results: Path, name: str, records: list, **extra) -> None:
    """One result file under a synthetic run's results/, written as respaths writes it."""
    s = ResultStore(results / name, {"experiment": name})
    for r in records:
        s.append(r)
    s.finish(**extra)

def write_run(out: Path, *, resnet_hit: float = 0.005, vgg_error: float = 0.86, fixed_diff: float = 0.002,
              losses: dict | None = None) -> Path:
    losses = {"resnet": [0.9, 0.31, 0.305], "vgg": [0.9, 0.41, 0.405], "stochastic": [0.9, 0.36, 0.357],
              "fixed": [1.2, 0.5, 0.496], **(losses or {})}  # converged: < 2% change in the last epoch
    out.mkdir(parents=True)
    models = {}
    for role, blocks, down in (("resnet", N, DOWN), ("vgg", 12, [i in (0, 4, 8) for i in range(12)]),
                               ("stochastic", N, DOWN), ("fixed", N, DOWN)):
        models[role] = {"name": "vgg15" if role == "vgg" else "preresnet20", "label": f"net-{role}",
                        "blocks": blocks, "downsample": down, "parameters": 1000, "fixed_m": 4 if role == "fixed" else None,
                        "stochastic_depth": 0.5 if role == "stochastic" else None,
                        "training": {"epochs": 2, "seconds": 12.5, "train_loss": losses[role]}}
    run = {"schema": "respaths.run/1", "preset": PRESETS["tiny"].config(), "models": models,
           "dataset": {"name": "fashion-mnist", "num_classes": 10, "n_test": 2000, "n_train": 6000},
           "steps": {"train resnet": {"seconds": 12.5}}, "environment": {"torch": torch.__version__, "device": "cpu"}}
    (out / "run.json").write_text(json.dumps(run))
    res = out / "results"
    store = functools.partial(write_results, res)

    base = {"resnet": 0.10, "vgg": 0.09, "stochastic": 0.11, "fixed": 0.10 + fixed_diff}
    nets, versus = {}, {}
    for role in ("resnet", "stochastic", "fixed"):
        hit = resnet_hit if role != "stochastic" else resnet_hit / 2
        single = [base[role] + (0.05 if DOWN[i] else hit) + 0.001 * i for i in range(N)]
        rand = [{"key": "baseline", "kind": "baseline", "k": 0, "sample": 0, "deleted": [], "error": base[role]}]
        rand += [{"key": f"random k={k} s={s}", "kind": "random", "k": k, "sample": s,
                  "deleted": list(range(k)), "error": base[role] + 0.03 * k * (0.8 if role == "stochastic" else 1)
                  + 0.004 * s} for k in (1, 2, 3, 4, 6) for s in range(3)]
        store(f"compare/{role}-lesion-random", rand, baseline={"error": base[role]})
        nets[role] = {"test": {"n": 2000, "error": base[role]}, "random": random_summary(rand),
                      "single": {"baseline": base[role], "errors": single, "downsample": DOWN}}
    versus["fixed"] = {"error_delta": fixed_diff, "error_delta_ci": [fixed_diff - 0.005, fixed_diff + 0.005],
                       "mcnemar_p": 0.5}
    versus["stochastic"] = {"error_delta": 0.01, "error_delta_ci": [0.005, 0.015], "mcnemar_p": 0.01,
                            "resilience": {"mean_increase_delta": -resnet_hit / 2,
                                           "ci": [-resnet_hit / 2 - 0.001, -resnet_hit / 2 + 0.001], "blocks": N}}
    (res / "compare" / "compare.json").write_text(json.dumps({"schema": "respaths.experiments.compare/1", "reference": "resnet",
                                                              "nets": nets, "versus": versus}))
    vgg = [{"key": f"single {i}", "kind": "single", "k": 1, "deleted": [i], "error": vgg_error + 0.002 * i}
           for i in range(12) if i not in (0, 4, 8)]
    store("single-vgg", vgg, baseline={"error": base["vgg"]})
    taus = [1 - 0.04 * j for j in range(1, 13)]
    store("reorder-resnet", [{"key": f"reorder k={j} s=0", "kind": "reorder", "k": j, "kendall_tau": t,
                              "error": 0.1 + 0.6 * (1 - t) + 0.002 * (j % 3)} for j, t in enumerate(taus)],
          baseline={"error": 0.10})
    g = torch.Generator().manual_seed(0)
    lengths = [paths.length_record(N, k, (10 ** (-0.6 * k)) * (1 + 0.1 * torch.rand(20, generator=g)))
               for k in range(N + 1)]
    s = ResultStore(res / "paths-resnet", {"experiment": "path-gradients", "blocks": N, "samples": 20,
                                           "n_images": 64})
    for r in lengths:
        s.append(r)
    s.finish()
    return out


# ---------------------------------------------------------------------------------------------
# A `respaths study` run of a brought net of n blocks, with hand-built numbers (the depth series' tests)

def depth_costs(n: int) -> list[float]:
    """The hand-built error increase of deleting each block alone: 0.3/n times 1, 2 or 3, and 0.4 at the
    two downsampling blocks (at n // 3 and 2n // 3)."""
    return [0.4 if i in depth_downsample(n) else 0.3 / n * (1 + i % 3) for i in range(n)]


def depth_downsample(n: int) -> set[int]:
    return {n // 3, 2 * n // 3}


def write_depth_run(out: Path, n: int, *, images: int = 1000, dataset: str = "cifar10", base: float = 0.1) -> Path:
    """run.json and the result files of a study of a net of n blocks: single deletions with the changed
    images that make depth_costs(n), 3 random sets per k = 1..n-1 (error base + 0.8 (1 - 2^-k) + 0.01 s),
    12 reorderings (error 0.1 + (1 - τ) / n) and path gradients 0.5^k with a 10% standard error."""
    out.mkdir(parents=True)
    down = [i in depth_downsample(n) for i in range(n)]
    name = f"resnet{2 * n + 2}"  # a CIFAR ResNet of n blocks in three stages
    model = {"name": name, "label": f"respaths:{name}", "blocks": n, "downsample": down, "parameters": 1000,
             "fixed_m": None, "stochastic_depth": None,
             "training": {"epochs": None, "seconds": None, "train_loss": None},
             "source": {"model": f"respaths:{name}", "weights": f"pretrained/akamaster-cifar10/{name}.th"}}
    run = {"schema": "respaths.run/1", "kind": "study",
           "preset": {"name": "study-paper", "description": f"respaths study of {name}", "seed": 0,
                      "dataset": dataset, "budget": {"name": "paper"}},
           "models": {"resnet": model}, "steps": {},
           "dataset": {"name": dataset, "num_classes": 10, "n_test": images, "n_train": 5000,
                       "preprocessing": {"normalize": "imagenet"}},
           "environment": {"torch": torch.__version__, "device": "cpu"}}
    (out / "run.json").write_text(json.dumps(run))
    res = out / "results"
    store = functools.partial(write_results, res)

    wrong0 = round(base * images)
    single = []
    for i, c in enumerate(depth_costs(n)):
        delta = round(c * images)
        right = 5 + i  # images the deletion turned right, besides those it turned wrong
        single.append({"key": f"single {i}", "kind": "single", "k": 1, "deleted": [i], "n": images,
                       "errors": wrong0 + delta, "error": (wrong0 + delta) / images,
                       "newly_wrong": delta + right, "newly_right": right})
    store("compare/resnet-lesion-single", single, baseline={"n": images, "errors": wrong0, "error": wrong0 / images})
    rand = [{"key": "baseline", "kind": "baseline", "k": 0, "sample": 0, "deleted": [], "error": base}]
    rand += [{"key": f"random k={k} s={s}", "kind": "random", "k": k, "sample": s, "deleted": list(range(k)),
              "error": base + 0.8 * (1 - 2.0 ** -k) + 0.01 * s} for k in range(1, n) for s in range(3)]
    store("compare/resnet-lesion-random", rand, baseline={"error": base})
    errors = [r["error"] for r in single]
    nets = {"resnet": {"test": {"n": images, "error": base}, "random": random_summary(rand),
                       "single": {"baseline": base, "errors": errors, "downsample": down}}}
    (res / "compare" / "compare.json").write_text(json.dumps({"schema": "respaths.compare/1", "reference": "resnet",
                                                              "nets": nets, "versus": {}}))
    taus = [1 - 0.05 * j for j in range(1, 13)]
    store("reorder-resnet", [{"key": f"reorder k={j} s=0", "kind": "reorder", "k": j, "kendall_tau": t,
                              "error": 0.1 + (1 - t) / n + 0.003 * (j % 2)} for j, t in enumerate(taus)],
          baseline={"error": base})
    s = ResultStore(res / "paths-resnet", {"experiment": "path-gradients", "blocks": n, "samples": 100,
                                           "n_images": 64})
    for k in range(n + 1):
        mean = 0.5 ** k
        s.append({"key": f"k{k:03d}", "length": k, "samples": 100, "mean": mean, "std": mean,
                  "ci": [mean - 1.959964 * 0.1 * mean, mean + 1.959964 * 0.1 * mean]})
    s.finish()
    return out
