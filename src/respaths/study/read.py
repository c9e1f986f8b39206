"""Reading results back: the Study that the report and the figures are made from.

  load_study(DIR)             a run directory of `respaths reproduce` or `respaths study` (run.json, results/)
  load_results_folder(DIR)    a folder of plain result files (`respaths lesion / reorder / paths --out DIR`)

A file that is missing is a part not measured; a file that is damaged or foreign is a UserError that
says which file and what to do.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..experiments.compare import _random_summary
from ..core import UserError
from ..io.layout import ResultFolder, RunLayout, json_of, training_metrics


def train_losses(train_dir: Path) -> list[float] | None:
    """The training loss of each epoch, from a training run's metrics.csv (None if there is none)."""
    path = training_metrics(train_dir)
    if not path.exists():
        return None
    try:
        with path.open(newline="") as f:
            return [float(row["train_loss"]) for row in csv.DictReader(f) if row.get("train_loss")]
    except (KeyError, ValueError):
        raise UserError(f"{path} is damaged (no train_loss column of numbers); delete the run's models and "
                        f"run the same reproduce command again.") from None


def _read(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; delete it and run the same reproduce command again.") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} holds a JSON {type(doc).__name__}, not the object respaths writes; delete it and "
                        f"run the same reproduce command again.")
    return doc


@contextmanager
def _fields_of(path: Path) -> Iterator[None]:
    """Reading the fields of a file respaths wrote: one missing or of the wrong type means that the file is
    damaged or foreign, which the user hears about as such (not as a TypeError)."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        raise UserError(f"{path} is damaged or not written by respaths ({type(e).__name__}: {e}); delete it "
                        f"and run the same reproduce command again.") from None


@dataclasses.dataclass
class Study:
    """One run's results as the report reads them. The parts inside stay the plain dicts of numbers
    that the result files hold; a part not measured is empty (or None), and its claims read "not measured".

    roles: "resnet" (the normally trained residual net), "vgg", "stochastic" (stochastic depth),
    "fixed" (fixed-m). Errors are fractions. A transformer's study has a metric, and its "error"
    numbers are that metric's, larger = worse (see respaths.study.report)."""
    dir: str     # the run directory (or result folder) as given
    title: str
    preset: str  # the preset's name; "results" for a folder of result files
    kind: str    # "reproduce", "study" (respaths study: trains no nets) or "results" (a folder of result files)
    # {"name", "label", "num_classes", "n_test", "n_train"}
    dataset: dict[str, Any]
    # {role: {"name", "label", "blocks", "downsample": [bool], "error", "training": {..., "train_loss"}, ...}}
    models: dict[str, dict[str, Any]]
    # {role: {"baseline", "errors": [error or None per block]}}
    single: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # {role: {"k": [...], "mean": [...], "std": [...], "n_samples"}}
    random: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # {role: {"baseline", "tau": [...], "error": [...]}}
    reorder: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # {"fixed-vs-resnet": {"diff", "ci": [lo, hi], "n", "mcnemar_p", "resilience", "random_delta"}}
    paired: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # {"n", "lengths", "mean", "low", "high", "samples", "n_images", "surviving_checked", "surviving_match"}
    paths: dict[str, Any] | None = None
    # how the run was made: versions, device, seeds, durations... (shown as the report's table)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    # run.json's "preset": the settings it ran with (None for a folder of result files)
    preset_settings: dict[str, Any] | None = None
    # {"name": "lm" | "cosine", "label", "chance"}; None: a classifier's test errors
    metric: dict[str, Any] | None = None


DATASET_LABELS = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
                  "synthetic": "synthetic data"}


def load_study(out: str | os.PathLike) -> Study:
    """The study from a run directory's run.json and result files."""
    out = Path(out)
    layout = RunLayout(out)
    run = _read(layout.run_json)
    if run is None:
        raise UserError(f"{out} is not a respaths run directory (no run.json); give a directory written by "
                        f"`respaths reproduce --out DIR`.")
    if isinstance(run.get("metric"), dict):  # a transformer's study: plain result files in results/
        with _fields_of(layout.run_json):
            return _study_meta(out, run, load_text_study(out, run))
    with _fields_of(layout.run_json):
        ds = dict(run.get("dataset", {}))
        if not ds:
            raise UserError(f"{out} holds no trained models yet; run `respaths reproduce` into it first.")
        name = ds["name"]
        ds["label"] = DATASET_LABELS.get(name, name) + (" (JPEG q75)" if name == "cifar10" and "jpeg" in
                                                         str(ds.get("source", "")).lower() else "")
        title, preset = f"{out.name} ({run['preset']['name']})", run["preset"]["name"]
        models = {role: dict(m, error=None) for role, m in run.get("models", {}).items()}
        study = Study(dir=str(out), title=title, preset=preset, kind=run.get("kind", "reproduce"), dataset=ds,
                      models=models, preset_settings=run["preset"])
        for role, m in study.models.items():  # runs of respaths < 0.3 did not copy the losses into run.json
            if not (m.get("training") or {}).get("train_loss"):
                m["training"] = dict(m.get("training") or {}, train_loss=train_losses(layout.model(role)))
    # the residual nets: respaths.experiments.compare's summary of their lesion curves and paired test errors
    cmp = _read(layout.compare_json)
    if cmp:
        with _fields_of(layout.compare_json):
            for role, net in cmp["nets"].items():
                if role in study.models:
                    study.models[role]["error"] = net["test"]["error"]
                    study.single[role] = {"baseline": net["single"]["baseline"], "errors": net["single"]["errors"]}
                    study.random[role] = dict(net["random"])
            for role, v in cmp.get("versus", {}).items():
                study.paired[f"{role}-vs-{cmp['reference']}"] = {
                    "diff": v["error_delta"], "ci": v["error_delta_ci"], "n": cmp["nets"][role]["test"]["n"],
                    "mcnemar_p": v.get("mcnemar_p"), "resilience": v.get("resilience"),
                    "random_delta": v.get("random_delta")}
    # the VGG
    path = json_of(layout.single("vgg"))
    doc = _read(path)
    if doc and "vgg" in study.models:
        with _fields_of(path):
            errs: list[float | None] = [None] * study.models["vgg"]["blocks"]
            for r in doc["records"]:
                if r["kind"] == "single":
                    errs[r["deleted"][0]] = r["error"]
            study.single["vgg"] = {"baseline": doc["baseline"]["error"], "errors": errs}
            study.models["vgg"]["error"] = doc["baseline"]["error"]
    path = json_of(layout.reorder("resnet"))
    doc = _read(path)
    if doc:
        with _fields_of(path):
            recs = [r for r in doc["records"] if r["kind"] == "reorder"]
            study.reorder["resnet"] = {"baseline": doc["baseline"]["error"],
                                       "tau": [r["kendall_tau"] for r in recs], "error": [r["error"] for r in recs]}
    path = json_of(layout.paths("resnet"))
    doc = _read(path)
    if doc:
        with _fields_of(path):
            if doc["records"]:
                recs = sorted(doc["records"], key=lambda r: r["length"])
                study.paths = {"n": doc["meta"]["blocks"], "lengths": [r["length"] for r in recs],
                               "mean": [r["mean"] for r in recs],
                               "low": [r["ci"][0] if r["ci"][0] is not None else r["mean"] for r in recs],
                               "high": [r["ci"][1] if r["ci"][1] is not None else r["mean"] for r in recs],
                               "samples": doc["meta"]["samples"], "n_images": doc["meta"]["n_images"]}
    return _study_meta(out, run, study)


def _study_meta(out: Path, run: dict[str, Any], study: Study) -> Study:
    """The surviving-paths check and how the run was made, added to a loaded study."""
    layout = RunLayout(out)
    path = json_of(layout.surviving("resnet"))
    doc = _read(path)
    if doc and study.paths is not None:
        with _fields_of(path):
            study.paths["surviving_checked"] = len(doc["records"])
            study.paths["surviving_match"] = sum(bool(r["match"]) for r in doc["records"])
    with _fields_of(layout.run_json):
        env, p = run.get("environment", {}), run["preset"]
        steps = run.get("steps", {})
        study.meta = {
            "preset": f"{p['name']}: {p['description']}",
            "versions": {k: env[k] for k in ("respaths", "python", "torch", "numpy", "scipy", "matplotlib")
                         if k in env},
            "device": env.get("device", "?"), "host": env.get("host", "?"),
            "seeds": {"training": p["seed"], "random deletion": p["seed"], "reordering": p["seed"],
                      "path sampling": p["seed"]},
            "durations (wall clock)": {k: v["seconds"] for k, v in steps.items()},
            "CPU time (all threads)": {k: v.get("cpu_seconds", "?") for k, v in steps.items()},
            "total time of the steps": (f"{sum(v['seconds'] for v in steps.values()):.0f} s wall clock, "
                                        f"{sum(v.get('cpu_seconds', 0) for v in steps.values()):.0f} s CPU"),
            "finished": run.get("finished", "not yet"),
            "directory": str(out),  # as given: a committed report names no machine's paths
        }
    return study


def load_text_study(out: Path, run: dict[str, Any]) -> Study:
    """The study of a transformer's run directory (study_text): its results/ folder read as plain result
    files, with the model, metric and title from run.json."""
    folder = RunLayout(out).folder
    present = folder.present()
    if not present:
        raise UserError(f"{out} holds no results yet; run `respaths study` into it first.")
    study = load_results_folder(folder.dir, only=present)
    study = dataclasses.replace(study, dir=str(out), title=f"{out.name} ({run['preset']['name']})",
                                preset=run["preset"]["name"], preset_settings=run["preset"], kind="study",
                                metric=dict(run["metric"]))
    model = dict(run["models"]["resnet"])
    model["error"] = study.models["resnet"].get("error")
    study.models = {"resnet": model}
    study.dataset.update(label=Path(str(run["dataset"]["text"])).name, num_classes=0,
                         n_test=run["dataset"]["n_test"])
    return study


# ---------------------------------------------------------------------------------------------
# A folder of plain result files (respaths lesion / reorder / paths --out DIR) read as a study

CLASSES = {"fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "synthetic": 10}


def num_classes(name: str) -> int | None:
    if name in CLASSES:
        return CLASSES[name]
    if name.startswith("imagefolder:"):  # as many classes as class folders
        root = Path(name.split(":", 1)[1]).expanduser()
        base = next((root / s for s in ("val", "test", "validation") if (root / s).is_dir()), root)
        return sum(p.is_dir() for p in base.iterdir()) if base.is_dir() else None
    return None


def _doc(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not valid JSON; delete it and run the command that wrote it again.") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("meta"), dict) or not isinstance(doc.get("records"), list):
        raise UserError(f"{path} is not a respaths result file; remove it from the folder.")
    return doc


METRIC_LABELS = {"lm": "LM loss", "cosine": "1 − cosine"}


def value_of(record: dict[str, Any], metric: str | None) -> float:
    """What the figures and claims read from a record, larger = worse: the test error (classifiers),
    the LM loss (decoders) or 1 - the embedding cosine to the full model (encoders)."""
    if metric == "lm":
        return record["loss"]
    if metric == "cosine":
        return 1.0 - record["cos"]
    return record["error"]


def metric_info(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The study's "metric" entry for result files written with a metric (None for classifier files)."""
    name = meta.get("metric")
    if name in (None, "classifier"):
        return None
    return {"name": name, "label": METRIC_LABELS.get(name, name), "chance": meta.get("chance")}


def load_results_folder(folder: str | Path, only: tuple[str, ...] = ResultFolder.NAMES) -> Study:
    """The study from the result files that `respaths lesion`, `reorder` and
    `paths` wrote into one --out folder: the claims they can test and their figures."""
    folder = Path(folder)
    docs = {name: _doc(ResultFolder(folder).file(name)) for name in only}
    docs = {k: v for k, v in docs.items() if v is not None}
    if not docs:
        raise UserError(f"{folder} holds neither run.json nor result files ({', '.join(f + '.json' for f in only)}); "
                        f"give a directory written by respaths reproduce, study, lesion, reorder or paths.")
    lesion = docs.get("lesion-single") or docs.get("lesion-random") or docs.get("reorder")
    meta = (lesion or docs["paths"])["meta"]
    blocks = meta.get("blocks") if isinstance(meta.get("blocks"), list) else []
    n = len(blocks) or int(meta.get("blocks") or 0)
    name = (meta.get("dataset") or {}).get("name") if isinstance(meta.get("dataset"), dict) else meta.get("dataset")
    n_test = ((meta.get("dataset") or {}).get("n_images") or (meta.get("dataset") or {}).get("n_examples")
              if isinstance(meta.get("dataset"), dict) else None)
    metric = metric_info(meta)
    m_name = metric["name"] if metric else None
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {"name": meta.get("model")}
    source = meta.get("source") or {}
    label = source.get("checkpoint") or source.get("model") or model.get("name") or "model"
    if source.get("hf"):  # a Hugging Face directory: its name and model class
        label = f"{Path(source['hf']).name} ({source.get('model_class', 'transformers')})"
    if source.get("weights"):
        label = f"{label} ({Path(source['weights']).name})"
    study = Study(
        dir=str(folder), title=folder.name, preset="results", kind="results",
        dataset={"name": name, "label": DATASET_LABELS.get(name, name), "num_classes": num_classes(str(name)),
                 "n_test": n_test or 0},
        models={"resnet": {"name": model.get("name"), "label": str(label), "blocks": n,
                           "downsample": [bool(b.get("downsample")) for b in blocks] or [False] * n,
                           "error": None, "training": {}}},
        meta={"directory": str(folder)})
    if metric:  # the "error" fields below then hold the metric's value (value_of)
        study.metric = metric
        study.dataset["label"] = Path(str(meta["text"])).name if meta.get("text") else "text"
    if "lesion-single" in docs:
        d = docs["lesion-single"]
        errs: list[float | None] = [None] * n
        for r in d["records"]:
            if r.get("kind") == "single":
                errs[r["deleted"][0]] = value_of(r, m_name)
        study.single["resnet"] = {"baseline": value_of(d["baseline"], m_name), "errors": errs}
        study.models["resnet"]["error"] = value_of(d["baseline"], m_name)
    if "lesion-random" in docs:
        recs = docs["lesion-random"]["records"]
        if metric:
            recs = [dict(r, error=value_of(r, m_name)) for r in recs]
        study.random["resnet"] = _random_summary(recs)
        study.models["resnet"]["error"] = study.models["resnet"]["error"] or recs[0]["error"]
    if "reorder" in docs:
        d = docs["reorder"]
        recs = [r for r in d["records"] if r["kind"] == "reorder"]
        study.reorder["resnet"] = {"baseline": value_of(d["baseline"], m_name),
                                   "tau": [r["kendall_tau"] for r in recs],
                                   "error": [value_of(r, m_name) for r in recs]}
    if "paths" in docs and docs["paths"]["records"]:
        d = docs["paths"]
        recs = sorted(d["records"], key=lambda r: r["length"])
        study.paths = {"n": d["meta"]["blocks"], "lengths": [r["length"] for r in recs],
                       "mean": [r["mean"] for r in recs],
                       "low": [r["ci"][0] if r["ci"][0] is not None else r["mean"] for r in recs],
                       "high": [r["ci"][1] if r["ci"][1] is not None else r["mean"] for r in recs],
                       "samples": d["meta"]["samples"], "n_images": d["meta"].get("n_images")}
        if not n:
            study.models["resnet"].update(blocks=d["meta"]["blocks"], downsample=[False] * d["meta"]["blocks"])
    if study.dataset["num_classes"] is None:
        study.dataset["num_classes"] = 0
    return study
