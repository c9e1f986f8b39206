"""Reading results back: one run, whatever wrote it, as the `Study` the claims, figures and report read.

  load_study(DIR)    a run directory of `respaths reproduce` or `respaths study` (run.json, results/), or a
                     folder of plain result files (`respaths lesion / reorder / paths --out DIR`)
  load_result(FILE)  one of those result files alone (what its own figure is drawn from)

Where each part is read from is respaths.io.layout's; a run's header (title, dataset, models, metric)
comes from run.json, a folder's from its result files. A file that is missing is a part not
measured; a file that is damaged or foreign is a UserError that says which file and what to do.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..core import UserError
from ..experiments.compare import random_summary
from ..io.layout import ResultFolder, RunLayout, compared_lesion, json_of, training_metrics
from ..metrics import Metric, metric_named


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

    def scored_by(self) -> Metric:
        """The metric the "error" numbers are of: the classifier's test error where `metric` is None."""
        return metric_named(self.metric["name"] if self.metric else "classifier")


@dataclasses.dataclass(frozen=True)
class Sources:
    """The result file each part of a study is read from (a file that is not there: a part not measured)."""

    single: dict[str, Path] = dataclasses.field(default_factory=dict)   # role -> single deletion
    random: dict[str, Path] = dataclasses.field(default_factory=dict)   # role -> random deletion
    reorder: dict[str, Path] = dataclasses.field(default_factory=dict)  # role -> reordering
    paths: Path | None = None      # the path gradients of the net under study
    surviving: Path | None = None  # the surviving-paths check against its lesions
    compare: Path | None = None    # compare.json: the compared residual nets' lesions and paired test errors

    @classmethod
    def of_folder(cls, folder: ResultFolder, names: tuple[str, ...] = ResultFolder.NAMES,
                  surviving: Path | None = None) -> "Sources":
        """The result files `names` of a folder, all of the one model (role "resnet")."""
        def role(name: str) -> dict[str, Path]:
            return {"resnet": folder.file(name)} if name in names else {}
        return cls(single=role("lesion-single"), random=role("lesion-random"), reorder=role("reorder"),
                   paths=folder.file("paths") if "paths" in names else None, surviving=surviving)

    @classmethod
    def of_images(cls, run: RunLayout) -> "Sources":
        """An image study's files: the compared nets in compare/, a VGG's single deletion beside them."""
        return cls(single={"vgg": json_of(run.single("vgg"))}, reorder={"resnet": json_of(run.reorder("resnet"))},
                   paths=json_of(run.paths("resnet")), surviving=json_of(run.surviving("resnet")),
                   compare=run.compare_json)


DATASET_LABELS = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
                  "synthetic": "synthetic data"}
CLASSES = {"fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "synthetic": 10}


def load_study(path: str | os.PathLike) -> Study:
    """The study of a run directory (one with run.json, or a path that is no directory) or of a folder
    of result files."""
    path = Path(path)
    run = RunLayout(path)
    if path.is_dir() and not run.run_json.exists():
        return _folder_study(ResultFolder(path))
    return _run_study(run)


def load_result(path: str | os.PathLike) -> Study:
    """The study of one result file of a folder (PREFIX.json, PREFIX one of ResultFolder.NAMES)."""
    path = Path(path)
    return _folder_study(ResultFolder(path.parent), (path.stem,))


# ---------------------------------------------------------------------------------------------
# Reading files

def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object respaths wrote (None where the file is not there); any other JSON is a UserError."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; delete it and run the command that wrote it again.") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} holds a JSON {type(doc).__name__}, not the object respaths writes; delete it and "
                        f"run the command that wrote it again.")
    return doc


def _result(path: Path | None) -> dict[str, Any] | None:
    """A result file (respaths.io.results: meta and records), or None where there is none."""
    doc = read_json(path) if path is not None else None
    if doc is not None and not (isinstance(doc.get("meta"), dict) and isinstance(doc.get("records"), list)):
        raise UserError(f"{path} is not a respaths result file; remove it, or run the command that wrote it again.")
    return doc


@contextmanager
def fields_of(path: Path) -> Iterator[None]:
    """Reading the fields of a file respaths wrote: one missing or of the wrong type means that the file is
    damaged or foreign, which the user hears about as such (not as a TypeError)."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        raise UserError(f"{path} is damaged or not written by respaths ({type(e).__name__}: {e}); delete it "
                        f"and run the same command again.") from None


def wilson_intervals(records: list[dict[str, Any]], blocks: int) -> list[list[float] | None] | None:
    """Per block the 95% Wilson interval of its single-deletion error, as the lesion records hold it
    (None where there is none: a block that cannot be deleted; None for all: records scored by a metric)."""
    ci: list[list[float] | None] = [None] * blocks
    for r in records:
        if r.get("kind") == "single" and r.get("error_ci"):
            ci[r["deleted"][0]] = list(r["error_ci"])
    return ci if any(c is not None for c in ci) else None


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


def metric_info(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The study's "metric" entry for result files written with a metric (None for classifier files)."""
    name = meta.get("metric")
    if name in (None, "classifier"):
        return None
    return {"name": name, "label": metric_named(name).label, "chance": meta.get("chance")}


def num_classes(name: str) -> int | None:
    if name in CLASSES:
        return CLASSES[name]
    if name.startswith("imagefolder:"):  # as many classes as class folders
        root = Path(name.split(":", 1)[1]).expanduser()
        base = next((root / s for s in ("val", "test", "validation") if (root / s).is_dir()), root)
        return sum(p.is_dir() for p in base.iterdir()) if base.is_dir() else None
    return None


# ---------------------------------------------------------------------------------------------
# The header: what was studied (from run.json, or from a folder's result files)

def _run_study(run: RunLayout) -> Study:
    out = run.root
    doc = read_json(run.run_json)
    if doc is None:
        raise UserError(f"{out} is not a respaths run directory (no run.json); give a directory written by "
                        f"`respaths reproduce --out DIR`.")
    with fields_of(run.run_json):
        if isinstance(doc.get("metric"), dict):  # a transformer's study: a result folder in results/
            study, metric = _text_run_header(run, doc)
            sources = Sources.of_folder(run.folder, surviving=json_of(run.surviving("resnet")))
        else:
            study, metric = _image_run_header(run, doc), None
            sources = Sources.of_images(run)
    _read_parts(study, sources, metric)
    with fields_of(run.run_json):
        study.meta = _how_it_was_run(out, doc)
    return study


def _image_run_header(run: RunLayout, doc: dict[str, Any]) -> Study:
    out = run.root
    ds = dict(doc.get("dataset", {}))
    if not ds:
        raise UserError(f"{out} holds no trained models yet; run `respaths reproduce` into it first.")
    name = ds["name"]
    ds["label"] = DATASET_LABELS.get(name, name) + (" (JPEG q75)" if name == "cifar10" and "jpeg" in
                                                     str(ds.get("source", "")).lower() else "")
    models = {role: dict(m, error=None) for role, m in doc.get("models", {}).items()}
    study = Study(dir=str(out), title=f"{out.name} ({doc['preset']['name']})", preset=doc["preset"]["name"],
                  kind=doc.get("kind", "reproduce"), dataset=ds, models=models, preset_settings=doc["preset"])
    for role, m in study.models.items():  # runs of respaths < 0.3 did not copy the losses into run.json
        if not (m.get("training") or {}).get("train_loss"):
            m["training"] = dict(m.get("training") or {}, train_loss=train_losses(run.model(role)))
    return study


def _text_run_header(run: RunLayout, doc: dict[str, Any]) -> tuple[Study, str | None]:
    """A transformer's study: its result folder's header, with the model, metric and title from run.json;
    and the metric its result files were scored by."""
    present = run.folder.present()
    if not present:
        raise UserError(f"{run.root} holds no results yet; run `respaths study` into it first.")
    study, metric = _folder_header(run.folder, present)
    model = dict(doc["models"]["resnet"], error=None)
    study = dataclasses.replace(study, dir=str(run.root), title=f"{run.root.name} ({doc['preset']['name']})",
                                preset=doc["preset"]["name"], preset_settings=doc["preset"], kind="study",
                                metric=dict(doc["metric"]), models={"resnet": model})
    study.dataset.update(label=Path(str(doc["dataset"]["text"])).name, num_classes=0,
                         n_test=doc["dataset"]["n_test"])
    return study, metric


def _folder_study(folder: ResultFolder, names: tuple[str, ...] = ResultFolder.NAMES) -> Study:
    study, metric = _folder_header(folder, names)
    _read_parts(study, Sources.of_folder(folder, names), metric)
    return study


def _folder_header(folder: ResultFolder, names: tuple[str, ...]) -> tuple[Study, str | None]:
    """What a folder's result files say of the model and data (the first lesion file's meta, else the
    paths file's); and the metric its records are scored by (None: a classifier's error)."""
    docs = {name: _result(folder.file(name)) for name in names}
    docs = {k: v for k, v in docs.items() if v is not None}
    if not docs:
        raise UserError(f"{folder.dir} holds neither run.json nor result files "
                        f"({', '.join(f + '.json' for f in names)}); give a directory written by respaths "
                        f"reproduce, study, lesion, reorder or paths.")
    first = next(n for n in ResultFolder.NAMES if n in docs)  # a lesion file's meta, else the paths file's
    meta = docs[first]["meta"]
    with fields_of(folder.file(first)):
        blocks = meta.get("blocks") if isinstance(meta.get("blocks"), list) else []
        n = len(blocks) or int(meta.get("blocks") or 0)
        ds = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else None
        name = ds.get("name") if ds is not None else meta.get("dataset")
        n_test = (ds.get("n_images") or ds.get("n_examples")) if ds is not None else None
        metric = metric_info(meta)
        model = meta.get("model") if isinstance(meta.get("model"), dict) else {"name": meta.get("model")}
        source = meta.get("source") or {}
        label = source.get("checkpoint") or source.get("model") or model.get("name") or "model"
        if source.get("hf"):  # a Hugging Face directory: its name and model class
            label = f"{Path(source['hf']).name} ({source.get('model_class', 'transformers')})"
        if source.get("weights"):
            label = f"{label} ({Path(source['weights']).name})"
    study = Study(
        dir=str(folder.dir), title=folder.dir.name, preset="results", kind="results",
        dataset={"name": name, "label": DATASET_LABELS.get(name, name), "num_classes": num_classes(str(name)) or 0,
                 "n_test": n_test or 0},
        models={"resnet": {"name": model.get("name"), "label": str(label), "blocks": n,
                           "downsample": [bool(b.get("downsample")) for b in blocks] or [False] * n,
                           "error": None, "training": {}}},
        meta={"directory": str(folder.dir)})
    if metric:  # the "error" fields of the parts then hold the metric's value (Metric.worse)
        study.metric = metric
        study.dataset["label"] = Path(str(meta["text"])).name if meta.get("text") else "text"
    return study, metric["name"] if metric else None


def _how_it_was_run(out: Path, run: dict[str, Any]) -> dict[str, Any]:
    """run.json's record of the run, as the report's last table shows it."""
    env, p = run.get("environment", {}), run["preset"]
    steps = run.get("steps", {})
    untimed = [k for k, v in steps.items() if "seconds" not in v]  # found done, computed outside the run's calls
    timed = {k: v for k, v in steps.items() if "seconds" in v}
    not_timed = "not timed: found done, computed outside this run's calls"
    return {
        "preset": f"{p['name']}: {p['description']}",
        "versions": {k: env[k] for k in ("respaths", "python", "torch", "numpy", "scipy", "matplotlib")
                     if k in env},
        "device": env.get("device", "?"), "host": env.get("host", "?"),
        "seeds": {"training": p["seed"], "random deletion": p["seed"], "reordering": p["seed"],
                  "path sampling": p["seed"]},
        "durations (wall clock)": {k: v.get("seconds", not_timed) for k, v in steps.items()},
        "CPU time (all threads)": {k: v.get("cpu_seconds", "?" if k in timed else not_timed) for k, v in steps.items()},
        "total time the run's calls recorded": (
            f"{sum(v['seconds'] for v in timed.values()):.0f} s wall clock, "
            f"{sum(v.get('cpu_seconds', 0) for v in timed.values()):.0f} s CPU"
            + (f", without {', '.join(untimed)} (not timed here)" if untimed else "")),
        "finished": run.get("finished", "not yet"),
        "directory": str(out),  # as given: a committed report names no machine's paths
    }


# ---------------------------------------------------------------------------------------------
# The parts: the same reading for every run, from the files `sources` names

def _read_parts(study: Study, sources: Sources, metric: str | None) -> None:
    """Fill the study's parts from the result files there are; metric: what the records are scored by
    (None: a classifier's error)."""
    worse = metric_named(metric or "classifier").worse  # the figures' and claims' number of a record
    cmp = read_json(sources.compare) if sources.compare is not None else None
    if cmp:
        with fields_of(sources.compare):
            _compared(study, cmp)
        for role in cmp["nets"]:  # their Wilson intervals, from each one's single-deletion records
            path = json_of(compared_lesion(sources.compare.parent, role, "single"))
            doc = read_json(path)
            if doc and role in study.single:
                with fields_of(path):
                    study.single[role]["ci"] = wilson_intervals(doc["records"], len(study.single[role]["errors"]))
    for role, path in sources.single.items():
        doc = _result(path)
        if doc and role in study.models:
            with fields_of(path):
                study.single[role] = _single(doc, study.models[role]["blocks"], worse)
                study.models[role]["error"] = study.single[role]["baseline"]
    for role, path in sources.random.items():
        doc = _result(path)
        if doc and role in study.models:
            with fields_of(path):
                recs = [dict(r, error=worse(r)) for r in doc["records"]] if metric else doc["records"]
                study.random[role] = random_summary(recs)
                study.models[role]["error"] = study.models[role]["error"] or recs[0]["error"]
    for role, path in sources.reorder.items():
        doc = _result(path)
        if doc and role in study.models:
            with fields_of(path):
                recs = [r for r in doc["records"] if r["kind"] == "reorder"]
                study.reorder[role] = {"baseline": worse(doc["baseline"]),
                                       "tau": [r["kendall_tau"] for r in recs],
                                       "error": [worse(r) for r in recs]}
    doc = _result(sources.paths)
    if doc and doc["records"]:
        with fields_of(sources.paths):
            study.paths = _paths(doc)
            m = study.models["resnet"]
            if not m["blocks"]:  # a folder of a paths file alone: the blocks are the paths file's
                m.update(blocks=doc["meta"]["blocks"], downsample=[False] * doc["meta"]["blocks"])
    doc = _result(sources.surviving)
    if doc and study.paths is not None:
        with fields_of(sources.surviving):
            study.paths["surviving_checked"] = len(doc["records"])
            study.paths["surviving_match"] = sum(bool(r["match"]) for r in doc["records"])


def _compared(study: Study, cmp: dict[str, Any]) -> None:
    """respaths.experiments.compare's summary of the residual nets' lesions and paired test errors."""
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


def _single(doc: dict[str, Any], blocks: int, worse: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    errors: list[float | None] = [None] * blocks
    for r in doc["records"]:
        if r.get("kind") == "single":
            errors[r["deleted"][0]] = worse(r)
    return {"baseline": worse(doc["baseline"]), "errors": errors, "ci": wilson_intervals(doc["records"], blocks)}


def _paths(doc: dict[str, Any]) -> dict[str, Any]:
    recs = sorted(doc["records"], key=lambda r: r["length"])
    return {"n": doc["meta"]["blocks"], "lengths": [r["length"] for r in recs], "mean": [r["mean"] for r in recs],
            "low": [r["ci"][0] if r["ci"][0] is not None else r["mean"] for r in recs],
            "high": [r["ci"][1] if r["ci"][1] is not None else r["mean"] for r in recs],
            "samples": doc["meta"]["samples"], "n_images": doc["meta"].get("n_images")}
