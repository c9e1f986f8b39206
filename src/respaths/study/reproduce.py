"""The whole study of Veit et al. 2016 in one command: train the models, run every experiment, report.

    respaths reproduce --preset quick --out runs/quick

A run directory holds run.json, models/<role>/ (one training run per net: resnet, a pre-activation
ResNet; vgg; stochastic, the ResNet trained with stochastic depth; fixed, trained with m blocks on),
results/, figures/ and report.html; respaths.io.layout names each file.

Every step is skipped when its output is already there, and the lesion and path steps resume from
their journals, so running the same command again continues where it stopped. Presets:

  quick          Fashion-MNIST, shallow narrow nets, short training: minutes on a 2-core CPU
  fashion-cpu    the paper's depth (54 blocks) at half width, short training: CPU hours
  fashion        the paper's depths (preresnet110, 54 blocks) and full training on Fashion-MNIST
  cifar10-paper  the paper's setup on CIFAR-10: 164 epochs, batch 128 (a GPU job)
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..adapters import view as make_view
from ..io.checkpoint import META, load_checkpoint, read_meta
from ..core import UserError
from ..data.sources import load_dataset
from ..data.batches import normalize
from ..models import blocks_of
from .read import train_losses
from ..io.layout import RunLayout
from .run_record import RunRecord, default_device, settings_record
from .run import Budget, StudiedNet, finish_run, run_experiments
from ..training.train import train

ROLES = ("resnet", "vgg", "stochastic", "fixed")


@dataclass(frozen=True)
class Preset:
    """A whole study: the nets it trains and how (the fields here), and how much of each experiment
    (budget, named as the preset; its train_limit, test_limit and seed also bound and seed the training)."""

    name: str
    description: str
    dataset: str
    model: str                   # the residual net; the stochastic-depth and fixed-m nets share it
    width: float
    vgg: str
    vgg_width: float
    epochs: int
    budget: Budget
    stochastic_depth: float = 0.5  # p_L of the linear decay rule (Huang et al.)
    fixed_share: float = 23 / 54   # m = round(share x blocks): the paper's 23 of 54
    batch_size: int = 128
    lr: float = 0.1
    schedule: str = "step"
    augment: bool = True         # random crop + flip (a short run learns faster without)
    hidden: bool = False         # a preset for tests, left out of --help

    def __post_init__(self) -> None:
        if self.budget.name != self.name:
            raise ValueError(f"preset {self.name!r} has the budget of {self.budget.name!r}")

    def blocks(self) -> int:
        return blocks_of(self.model)

    def fixed_m(self) -> int:
        return max(1, round(self.fixed_share * self.blocks()))

    def config(self) -> dict[str, Any]:
        """The preset as run.json records it: one flat record, its keys in the order run.json has always
        had them (a rerun into a run directory is compared with it)."""
        fields = {**dataclasses.asdict(self.budget),
                  **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "budget"}}
        return {k: fields[k] for k in CONFIG_KEYS}


CONFIG_KEYS = ("name", "description", "dataset", "model", "width", "vgg", "vgg_width", "epochs", "train_limit",
               "test_limit", "random_k", "random_samples", "reorder_k", "reorder_samples", "path_samples",
               "path_batches", "path_batch_size", "stochastic_depth", "fixed_share", "batch_size", "lr", "schedule",
               "augment", "eval_batch_size", "fast", "seed", "hidden")

PRESETS = {p.name: p for p in [
    Preset("quick", "Fashion-MNIST, a 27-block pre-activation ResNet (preresnet56) at half width and an "
                    "eighth-width VGG-15, one epoch on 20,000 images; 1,000 test images (minutes on a 2-core CPU)",
           dataset="fashion-mnist", model="preresnet56", width=0.5, vgg="vgg15", vgg_width=0.125, epochs=1,
           budget=Budget("quick", train_limit=20000, test_limit=1000, random_k=(1, 2, 4, 6, 8, 10, 12),
                         random_samples=4, reorder_k=(1, 2, 4, 6, 8, 10), reorder_samples=3, path_samples=24,
                         path_batches=1, path_batch_size=32, fast=True),
           batch_size=64, lr=0.1, schedule="cosine", augment=False),
    Preset("fashion-cpu", "Fashion-MNIST, the paper's depth (preresnet110, 54 blocks) at half width and a "
                          "quarter-width VGG-15, 3 epochs on 30,000 images; 2,000 test images (about an hour "
                          "and a half on a 2-core CPU)",
           dataset="fashion-mnist", model="preresnet110", width=0.5, vgg="vgg15", vgg_width=0.25, epochs=3,
           budget=Budget("fashion-cpu", train_limit=30000, test_limit=2000,
                         random_k=(1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20), random_samples=5,
                         reorder_k=(1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20), reorder_samples=5, path_samples=100,
                         path_batches=1, path_batch_size=64, fast=True),
           schedule="cosine", augment=False),
    Preset("fashion", "Fashion-MNIST, the paper's depths: preresnet110 (54 blocks) and VGG-15 at full width, "
                      "40 epochs on all 60,000 images, all 10,000 test images (days on a 2-core CPU, "
                      "minutes on a GPU)",
           dataset="fashion-mnist", model="preresnet110", width=1.0, vgg="vgg15", vgg_width=1.0, epochs=40,
           budget=Budget("fashion", train_limit=None, test_limit=None, random_k=tuple(range(1, 21)),
                         random_samples=20, reorder_k=tuple(range(1, 21)), reorder_samples=20, path_samples=1000,
                         path_batches=4, path_batch_size=128)),
    Preset("cifar10-paper", "CIFAR-10, the paper's setup: preresnet110 and VGG-15, 164 epochs, batch 128, "
                            "lr 0.1 /10 at epochs 82 and 123 (a GPU job)",
           dataset="cifar10", model="preresnet110", width=1.0, vgg="vgg15", vgg_width=1.0, epochs=164,
           budget=Budget("cifar10-paper", train_limit=None, test_limit=None, random_k=tuple(range(1, 21)),
                         random_samples=20, reorder_k=tuple(range(1, 21)), reorder_samples=20, path_samples=1000,
                         path_batches=4, path_batch_size=128)),
    Preset("tiny", "for tests: synthetic data, 9-block nets at 1/8 width, one short epoch",
           dataset="synthetic", model="preresnet20", width=0.125, vgg="vgg15", vgg_width=0.0625, epochs=1,
           budget=Budget("tiny", train_limit=384, test_limit=128, random_k=(1, 2, 4), random_samples=2,
                         reorder_k=(1, 2, 3), reorder_samples=2, path_samples=4, path_batches=1, path_batch_size=8),
           batch_size=32, schedule="cosine", hidden=True),
]}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        shown = [n for n, p in PRESETS.items() if not p.hidden]
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(shown)}.")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------
# The run directory's own record

def holds_other_settings(out: str | os.PathLike, p: Preset) -> bool:
    """Whether out/run.json records a run of other settings than p's (False without a readable record)."""
    try:
        old = json.loads(RunLayout(out).run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(old, dict) and old.get("preset", {}) != settings_record(p)



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


def trained(checkpoint: Path, epochs: int) -> bool:
    """Whether the trainer's checkpoint has finished all epochs."""
    if not (checkpoint / META).exists():
        return False
    try:
        return int(read_meta(checkpoint).get("epoch", -1)) >= epochs
    except (UserError, ValueError, TypeError):
        return False


def train_role(p: Preset, role: str, run_dir: Path, device: torch.device, data_dir: str | None,
               progress: bool) -> None:
    """Train (or resume training) one model of the study with the project's trainer."""
    spec = model_specs(p)[role]
    train(dict(model=spec["model"], dataset=p.dataset, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
               schedule=p.schedule, width=spec["width"], stochastic_depth=spec.get("stochastic_depth"),
               fixed_m=spec.get("fixed_m"), augment=p.augment, limit_train=p.budget.train_limit, limit_test=p.budget.test_limit,
               seed=p.budget.seed,
               out=str(run_dir), data_dir=data_dir, device=str(device), eval_every=p.epochs, resume=True,
               progress=progress))


# ---------------------------------------------------------------------------------------------
# The experiments

# ---------------------------------------------------------------------------------------------

def reproduce(preset_name: str, out: str | os.PathLike, *, force: bool = False, device: str | None = None,
              data_dir: str | None = None, progress: bool = True, report: bool = True,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> Path:
    """Run the study of `preset_name` into `out`; returns the report's path (or the run directory)."""
    p = preset(preset_name)
    out = Path(out)
    layout = RunLayout(out)
    dev = torch.device(device) if device else default_device()
    # the test images before anything is written: a missing dataset leaves --out as it was
    test = load_dataset(p.dataset, data_dir, split="test", limit=p.budget.test_limit)
    run = RunRecord(out, p, force)
    specs = model_specs(p)
    start_all = time.perf_counter()

    def step(name: str, done: bool, fn: Callable[[], Any], what: str) -> None:
        run.run_step(name, done, fn, what, log)

    # 1. the models (one found trained is reused: no step of this run, timed or not)
    for role in ROLES:
        run_dir = layout.model(role)
        run.run_step(f"train {role}", trained(layout.checkpoint(role), p.epochs),
                     lambda: train_role(p, role, run_dir, dev, data_dir, progress),
                     f"training {role}: {label(specs[role])} for {p.epochs} epochs", log, note_untimed=False)
    train_set = load_dataset(p.dataset, data_dir, split="train", limit=p.budget.train_limit)
    # 2. the same study code as `respaths study`, on the nets just trained
    probe = normalize(test.images[:2], test.mean, test.std).to(dev)
    nets = {}
    for role in ROLES:
        model, meta = load_checkpoint(layout.checkpoint(role), device=dev)
        view = make_view(model, probe)
        view.name = view.name or specs[role]["model"]
        nets[role] = StudiedNet(role, label(specs[role]), view, model, test, {"source": {"checkpoint": str(layout.model(role))}},
                         {"epochs": meta.get("epoch"), "seconds": run.data["steps"].get(f"train {role}", {}).get("seconds"),
                          "train_loss": train_losses(layout.model(role))})
    run.data["models"] = {role: {**{k: v for k, v in net.record().items() if k != "source"}, "name": specs[role]["model"],
                                 # relative to the run directory
                                 "checkpoint": RunLayout(Path()).checkpoint(role).as_posix()}
                          for role, net in nets.items()}
    run.data["dataset"] = {"name": test.name, "num_classes": test.num_classes, "n_test": len(test),
                           "n_train": len(train_set), "source": getattr(test, "source", "")}
    run.save()
    run_experiments(out, nets, train_set, p.budget, device=dev, step=step, progress=progress)
    return finish_run(run, out, report, start_all)
