"""The whole study of Veit et al. 2016 in one command: train the models, run every experiment, report.

    respaths reproduce --preset quick --out runs/quick

A run directory holds

  run.json                 the preset, what was done and how long it took, versions, device, seeds
  models/<role>/           one training run per model (checkpoint/, metrics.csv): resnet (pre-activation ResNet), vgg, stochastic
                           (the ResNet trained with stochastic depth), fixed (trained with m blocks on)
  results/<name>.json|csv  compare/ (respaths.compare: single and random-k deletion of the resnet,
                           stochastic and fixed nets, their test errors compared image by image),
                           single-vgg, reorder-resnet, paths-resnet, surviving-resnet
  figures/*.png|svg        the paper's figures
  report.html              the claims checked, the figures, the models and the run, in one file

Every step is skipped when its output is already there, and the lesion and path steps resume from
their journals, so running the same command again continues where it stopped. Presets:

  quick          Fashion-MNIST, shallow narrow nets, short training: minutes on a 2-core CPU
  fashion-cpu    the paper's depth (54 blocks) at half width, short training: CPU hours
  fashion        the paper's depths (preresnet110, 54 blocks) and full training on Fashion-MNIST
  cifar10-paper  the paper's setup on CIFAR-10: 164 epochs, batch 128 (a GPU job)
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .atomic import write_text
from .core import UserError

ROLES = ("resnet", "vgg", "stochastic", "fixed")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    dataset: str
    model: str                   # the residual net; the stochastic-depth and fixed-m nets share it
    width: float
    vgg: str
    vgg_width: float
    epochs: int
    train_limit: int | None      # training images (None: all)
    test_limit: int | None       # test images every experiment is measured on (None: all)
    random_k: tuple[int, ...]    # numbers of randomly deleted blocks
    random_samples: int
    reorder_k: tuple[int, ...]   # numbers of swapped pairs
    reorder_samples: int
    path_samples: int            # sampled paths per length (the paper: 1,000)
    path_batches: int            # training batches the path gradients are averaged over
    path_batch_size: int
    stochastic_depth: float = 0.5  # p_L of the linear decay rule (Huang et al.)
    fixed_share: float = 23 / 54   # m = round(share x blocks): the paper's 23 of 54
    batch_size: int = 128
    lr: float = 0.1
    schedule: str = "step"
    augment: bool = True         # random crop + flip (a short run learns faster without)
    eval_batch_size: int = 500
    fast: bool = False           # the lesion engine's BN folding + channels_last (changes rounding only)
    seed: int = 0
    hidden: bool = False         # a preset for tests, left out of --help

    def blocks(self) -> int:
        return 3 * (int(self.model.removeprefix("preresnet")) - 2) // 6

    def fixed_m(self) -> int:
        return max(1, round(self.fixed_share * self.blocks()))

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def budget(self):
        """The preset's experiment sizes, as respaths.study runs them."""
        from .study import Budget
        return Budget(self.name, self.test_limit, self.random_k, self.random_samples, self.reorder_k,
                      self.reorder_samples, self.path_samples, self.path_batches, self.path_batch_size,
                      self.eval_batch_size, self.fast, self.seed, self.train_limit)


PRESETS = {p.name: p for p in [
    Preset("quick", "Fashion-MNIST, a 27-block pre-activation ResNet (preresnet56) at half width and an "
                    "eighth-width VGG-15, one epoch on 20,000 images; 1,000 test images (minutes on a 2-core CPU)",
           dataset="fashion-mnist", model="preresnet56", width=0.5, vgg="vgg15", vgg_width=0.125, epochs=1,
           train_limit=20000, test_limit=1000, random_k=(1, 2, 4, 6, 8, 10, 12), random_samples=4,
           reorder_k=(1, 2, 4, 6, 8, 10), reorder_samples=3, path_samples=24, path_batches=1,
           path_batch_size=32, batch_size=64, lr=0.1, schedule="cosine", augment=False, fast=True),
    Preset("fashion-cpu", "Fashion-MNIST, the paper's depth (preresnet110, 54 blocks) at half width and a "
                          "quarter-width VGG-15, 3 epochs on 30,000 images; 2,000 test images (about an hour "
                          "and a half on a 2-core CPU)",
           dataset="fashion-mnist", model="preresnet110", width=0.5, vgg="vgg15", vgg_width=0.25, epochs=3,
           train_limit=30000, test_limit=2000, random_k=(1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20),
           random_samples=5, reorder_k=(1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20), reorder_samples=5,
           path_samples=100, path_batches=1, path_batch_size=64, schedule="cosine", augment=False, fast=True),
    Preset("fashion", "Fashion-MNIST, the paper's depths: preresnet110 (54 blocks) and VGG-15 at full width, "
                      "40 epochs on all 60,000 images, all 10,000 test images (days on a 2-core CPU, "
                      "minutes on a GPU)",
           dataset="fashion-mnist", model="preresnet110", width=1.0, vgg="vgg15", vgg_width=1.0, epochs=40,
           train_limit=None, test_limit=None, random_k=tuple(range(1, 21)), random_samples=20,
           reorder_k=tuple(range(1, 21)), reorder_samples=20, path_samples=1000, path_batches=4,
           path_batch_size=128),
    Preset("cifar10-paper", "CIFAR-10, the paper's setup: preresnet110 and VGG-15, 164 epochs, batch 128, "
                            "lr 0.1 /10 at epochs 82 and 123 (a GPU job)",
           dataset="cifar10", model="preresnet110", width=1.0, vgg="vgg15", vgg_width=1.0, epochs=164,
           train_limit=None, test_limit=None, random_k=tuple(range(1, 21)), random_samples=20,
           reorder_k=tuple(range(1, 21)), reorder_samples=20, path_samples=1000, path_batches=4,
           path_batch_size=128),
    Preset("tiny", "for tests: synthetic data, 9-block nets at 1/8 width, one short epoch",
           dataset="synthetic", model="preresnet20", width=0.125, vgg="vgg15", vgg_width=0.0625, epochs=1,
           train_limit=384, test_limit=128, random_k=(1, 2, 4), random_samples=2, reorder_k=(1, 2, 3),
           reorder_samples=2, path_samples=4, path_batches=1, path_batch_size=8, batch_size=32,
           schedule="cosine", hidden=True),
]}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        shown = [n for n, p in PRESETS.items() if not p.hidden]
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(shown)}.")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------
# The run directory's own record

def _write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def _settings(p: Preset) -> dict[str, Any]:
    """The preset as run.json records it (tuples become lists)."""
    return json.loads(json.dumps(p.config()))


def holds_other_settings(out: str | os.PathLike, p: Preset) -> bool:
    """Whether out/run.json records a run of other settings than p's (False without a readable record)."""
    try:
        old = json.loads((Path(out) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(old, dict) and old.get("preset", {}) != _settings(p)


class RunRecord:
    """run.json: which preset, when each step ran and for how long; refuses a different preset."""

    def __init__(self, out: Path, p: Preset, force: bool):
        self.path = out / "run.json"
        out.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not force:
            try:
                old = json.loads(self.path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                old = None
            if not (isinstance(old, dict) and isinstance(old.get("preset"), dict)
                    and isinstance(old.get("steps"), dict) and isinstance(old.get("models", {}), dict)):
                raise UserError(f"{self.path} is damaged or not a respaths run record; remove it, or pass --force "
                                f"to start over.")
            if old["preset"] != _settings(p):
                raise UserError(f"{out} holds a run of another preset ({old['preset'].get('name')}) "
                                f"or settings; choose another --out or pass --force to start over.")
            self.data = old
        else:
            if force:
                import shutil
                for sub in ("models", "results", "figures"):
                    shutil.rmtree(out / sub, ignore_errors=True)
            self.data = {"schema": "respaths.run/1", "preset": p.config(), "steps": {}, "models": {}}
        self.data["environment"] = environment()
        self.save()

    def save(self) -> None:
        _write_json(self.path, self.data)

    def step(self, name: str, seconds: float, cpu_seconds: float, accumulate: bool = True) -> None:
        """Add a finished (part of a) step: wall-clock and CPU time (all threads) accumulate over resumes
        (a step redone from scratch each time, like the report, replaces its time instead)."""
        prev = self.data["steps"].get(name, {}) if accumulate else {}
        self.data["steps"][name] = {"seconds": round(prev.get("seconds", 0.0) + seconds, 2),
                                    "cpu_seconds": round(prev.get("cpu_seconds", 0.0) + cpu_seconds, 2),
                                    "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.save()


def cpu_time() -> float:
    """CPU seconds of this process, all threads (on a shared machine, less noisy than the wall clock)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def environment() -> dict[str, Any]:
    import matplotlib
    import numpy
    import scipy

    from . import __version__
    dev = default_device()
    if dev.type == "cuda":
        device = torch.cuda.get_device_name(dev)
    else:
        device = cpu_name() + f", {torch.get_num_threads()} threads"
    return {"respaths": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "matplotlib": matplotlib.__version__,
            "device": f"{dev.type}: {device}", "host": socket.gethostname(), "platform": platform.platform()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# The models

def model_specs(p: Preset) -> dict[str, dict[str, Any]]:
    """What each role trains: model name and options for respaths.models.build_model."""
    return {
        "resnet": dict(model=p.model, width=p.width),
        "vgg": dict(model=p.vgg, width=p.vgg_width),
        "stochastic": dict(model=p.model, width=p.width, stochastic_depth=p.stochastic_depth),
        "fixed": dict(model=p.model, width=p.width, fixed_m=p.fixed_m()),
    }


def label(spec: dict[str, Any]) -> str:
    s = spec["model"] + (f" ×{spec['width']:g}" if spec.get("width", 1) != 1 else "")
    if spec.get("stochastic_depth") is not None:
        s += f", stochastic depth p_L={spec['stochastic_depth']:g}"
    if spec.get("fixed_m") is not None:
        s += f", fixed m={spec['fixed_m']}"
    return s


def trained(run_dir: Path, epochs: int) -> bool:
    """Whether the trainer's checkpoint in run_dir has finished all epochs."""
    from .checkpoint import read_meta
    if not (run_dir / "checkpoint" / "meta.json").exists():
        return False
    try:
        return int(read_meta(run_dir / "checkpoint").get("epoch", -1)) >= epochs
    except (UserError, ValueError, TypeError):
        return False


def train_role(p: Preset, role: str, run_dir: Path, device: torch.device, data_dir: str | None,
               progress: bool) -> None:
    """Train (or resume training) one model of the study with the project's trainer."""
    from .train import train
    spec = model_specs(p)[role]
    train(dict(model=spec["model"], dataset=p.dataset, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
               schedule=p.schedule, width=spec["width"], stochastic_depth=spec.get("stochastic_depth"),
               fixed_m=spec.get("fixed_m"), augment=p.augment, limit_train=p.train_limit, limit_test=p.test_limit,
               seed=p.seed,
               out=str(run_dir), data_dir=data_dir, device=str(device), eval_every=p.epochs, resume=True,
               progress=progress))


# ---------------------------------------------------------------------------------------------
# The experiments

# ---------------------------------------------------------------------------------------------

def reproduce(preset_name: str, out: str | os.PathLike, *, force: bool = False, device: str | None = None,
              data_dir: str | None = None, progress: bool = True, report: bool = True,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> Path:
    """Run the study of `preset_name` into `out`; returns the report's path (or the run directory)."""
    from .adapters import view as make_view
    from .checkpoint import load_checkpoint
    from .data import load_dataset

    p = preset(preset_name)
    out = Path(out)
    dev = torch.device(device) if device else default_device()
    # the test images before anything is written: a missing dataset leaves --out as it was
    test = load_dataset(p.dataset, data_dir, split="test", limit=p.test_limit)
    run = RunRecord(out, p, force)
    specs = model_specs(p)
    start_all = time.perf_counter()

    def step(name: str, done: bool, fn: Callable[[], Any], what: str) -> None:
        if done:
            log(f"[respaths] {what}: already done, kept")
            return
        log(f"[respaths] {what} ...")
        t, c = time.perf_counter(), cpu_time()
        fn()
        run.step(name, time.perf_counter() - t, cpu_time() - c)

    # 1. the models
    for role in ROLES:
        run_dir = out / "models" / role
        step(f"train {role}", trained(run_dir, p.epochs),
             lambda: train_role(p, role, run_dir, dev, data_dir, progress),
             f"training {role}: {label(specs[role])} for {p.epochs} epochs")
    train_set = load_dataset(p.dataset, data_dir, split="train", limit=p.train_limit)
    # 2. the same study code as `respaths study`, on the nets just trained
    from .data import normalize
    from .study import Net, run_experiments
    probe = normalize(test.images[:2], test.mean, test.std).to(dev)
    nets = {}
    for role in ROLES:
        model, meta = load_checkpoint(out / "models" / role / "checkpoint", device=dev)
        view = make_view(model, probe)
        view.name = view.name or specs[role]["model"]
        nets[role] = Net(role, label(specs[role]), view, model, test, {"source": {"checkpoint": str(out / "models" / role)}},
                         {"epochs": meta.get("epoch"), "seconds": run.data["steps"].get(f"train {role}", {}).get("seconds"),
                          "train_loss": train_losses(out / "models" / role)})
    run.data["models"] = {role: {**{k: v for k, v in net.record().items() if k != "source"}, "name": specs[role]["model"],
                                 "checkpoint": f"models/{role}/checkpoint"} for role, net in nets.items()}
    run.data["dataset"] = {"name": test.name, "num_classes": test.num_classes, "n_test": len(test),
                           "n_train": len(train_set), "source": getattr(test, "source", "")}
    run.save()
    run_experiments(out, nets, train_set, p.budget(), device=dev, step=step, progress=progress)
    run.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    run.data["seconds_this_call"] = round(time.perf_counter() - start_all, 1)
    run.save()
    if not report:
        return out
    t, c = time.perf_counter(), cpu_time()
    from .report import build
    path = build([out])
    run.step("report", time.perf_counter() - t, cpu_time() - c, accumulate=False)
    return path


# ---------------------------------------------------------------------------------------------
# Reading a run back: the study the report is made from

def train_losses(run_dir: Path) -> list[float] | None:
    """The training loss of each epoch, from a training run's metrics.csv (None if there is none)."""
    path = Path(run_dir) / "metrics.csv"
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


DATASET_LABELS = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
                  "synthetic": "synthetic data"}


def load_study(out: str | os.PathLike) -> dict[str, Any]:
    """The study (see respaths.report) from a run directory's run.json and result files."""
    out = Path(out)
    run = _read(out / "run.json")
    if run is None:
        raise UserError(f"{out} is not a respaths run directory (no run.json); give a directory written by "
                        f"`respaths reproduce --out DIR`.")
    res = out / "results"
    if isinstance(run.get("metric"), dict):  # a transformer's study: plain result files in results/
        from .study import load_text_study
        with _fields_of(out / "run.json"):
            return _study_meta(out, run, load_text_study(out, run))
    with _fields_of(out / "run.json"):
        ds = dict(run.get("dataset", {}))
        if not ds:
            raise UserError(f"{out} holds no trained models yet; run `respaths reproduce` into it first.")
        name = ds["name"]
        ds["label"] = DATASET_LABELS.get(name, name) + (" (JPEG q75)" if name == "cifar10" and "jpeg" in
                                                         str(ds.get("source", "")).lower() else "")
        study: dict[str, Any] = {"dir": str(out), "title": f"{out.name} ({run['preset']['name']})",
                                 "preset": run["preset"]["name"], "dataset": ds, "models": {}, "single": {},
                                 "random": {}, "reorder": {}, "paired": {}, "kind": run.get("kind", "reproduce")}
        models = run.get("models", {})
        study["models"] = {role: dict(m, error=None) for role, m in models.items()}
        for role, m in study["models"].items():  # runs of respaths < 0.3 did not copy the losses into run.json
            if not (m.get("training") or {}).get("train_loss"):
                m["training"] = dict(m.get("training") or {}, train_loss=train_losses(out / "models" / role))
    # the residual nets: respaths.compare's summary of their lesion curves and paired test errors
    cmp = _read(res / "compare" / "compare.json")
    if cmp:
        with _fields_of(res / "compare" / "compare.json"):
            for role, net in cmp["nets"].items():
                if role in study["models"]:
                    study["models"][role]["error"] = net["test"]["error"]
                    study["single"][role] = {"baseline": net["single"]["baseline"], "errors": net["single"]["errors"]}
                    study["random"][role] = dict(net["random"])
            for role, v in cmp.get("versus", {}).items():
                study["paired"][f"{role}-vs-{cmp['reference']}"] = {
                    "diff": v["error_delta"], "ci": v["error_delta_ci"], "n": cmp["nets"][role]["test"]["n"],
                    "mcnemar_p": v.get("mcnemar_p"), "resilience": v.get("resilience"),
                    "random_delta": v.get("random_delta")}
    # the VGG
    doc = _read(res / "single-vgg.json")
    if doc and "vgg" in study["models"]:
        with _fields_of(res / "single-vgg.json"):
            errs: list[float | None] = [None] * study["models"]["vgg"]["blocks"]
            for r in doc["records"]:
                if r["kind"] == "single":
                    errs[r["deleted"][0]] = r["error"]
            study["single"]["vgg"] = {"baseline": doc["baseline"]["error"], "errors": errs}
            study["models"]["vgg"]["error"] = doc["baseline"]["error"]
    doc = _read(res / "reorder-resnet.json")
    if doc:
        with _fields_of(res / "reorder-resnet.json"):
            recs = [r for r in doc["records"] if r["kind"] == "reorder"]
            study["reorder"]["resnet"] = {"baseline": doc["baseline"]["error"],
                                          "tau": [r["kendall_tau"] for r in recs], "error": [r["error"] for r in recs]}
    doc = _read(res / "paths-resnet.json")
    if doc:
        with _fields_of(res / "paths-resnet.json"):
            if doc["records"]:
                recs = sorted(doc["records"], key=lambda r: r["length"])
                study["paths"] = {"n": doc["meta"]["blocks"], "lengths": [r["length"] for r in recs],
                                  "mean": [r["mean"] for r in recs],
                                  "low": [r["ci"][0] if r["ci"][0] is not None else r["mean"] for r in recs],
                                  "high": [r["ci"][1] if r["ci"][1] is not None else r["mean"] for r in recs],
                                  "samples": doc["meta"]["samples"], "n_images": doc["meta"]["n_images"]}
    return _study_meta(out, run, study)


def _study_meta(out: Path, run: dict[str, Any], study: dict[str, Any]) -> dict[str, Any]:
    """The surviving-paths check and how the run was made, added to a loaded study."""
    res = out / "results"
    doc = _read(res / "surviving-resnet.json")
    if doc and "paths" in study:
        with _fields_of(res / "surviving-resnet.json"):
            study["paths"]["surviving_checked"] = len(doc["records"])
            study["paths"]["surviving_match"] = sum(bool(r["match"]) for r in doc["records"])
    with _fields_of(out / "run.json"):
        env, p = run.get("environment", {}), run["preset"]
        steps = run.get("steps", {})
        study["meta"] = {
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
            "directory": str(out.resolve()),
        }
    return study
