"""Where a run's files live: the name of every file a run directory or a result folder holds.

Every command and reader asks this module for a file name instead of spelling it. A name here is a
*prefix* where the file is a result file (ResultStore writes PREFIX.json, PREFIX.csv and its journal;
a figure beside it is PREFIX.png and PREFIX.svg).

A result folder (`respaths lesion / reorder / paths --out DIR`; a transformer's study keeps one in results/):

  lesion-single, lesion-random, reorder, paths

A run directory (`respaths study` and `respaths reproduce --out DIR`):

  run.json                  the run's settings, steps, environment (respaths.study.run_record)
  models/<role>/            reproduce only: one training run per net (checkpoint/, metrics.csv)
  results/                  an image study:
      compare/compare.json              the residual nets compared (respaths.experiments.compare), with
      compare/<role>-lesion-single|random   each one's single and random deletion
      single-<role>                     single deletion of a net without shortcuts (the VGG)
      reorder-<role>, paths-<role>, surviving-<role>
                            a transformer's study: a result folder, and surviving-resnet
      layers-<method>       `respaths layers` results saved into the run (their figures join the report)
  figures/<stem>.png|svg    the report's figures
  report.html

A report of several runs written into a folder (`respaths report DIR... --out FOLDER`): report.html, and for
runs of several depths figures/series-*.png|svg and series.json.

`respaths layers --out PREFIX` names its result file itself (default runs/layers-<method>).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# the report's figures (figures/STEM.png and .svg), by what they show
FIGURES = {"single": "fig3-single-deletion", "random": "fig5a-random-deletion", "reorder": "fig5b-reorder",
           "paths": "fig6-paths", "surviving": "fig7-surviving-paths", "stochastic": "fig8-stochastic-depth"}

FIGURES_DIR = "figures"
LOCK = ".respaths.lock"  # held while a command writes into a directory (respaths.io.atomic.output_lock)

# what respaths writes into each kind of run directory besides run.json (a same-named thing of the user's is
# refused: respaths.validation; within them --force deletes only respaths' own files:
# study.run_record.delete_own_files)
RUN_FILES = {"train": ("checkpoint", "checkpoint.old", "metrics.csv"),
             "reproduce": ("models", "results", FIGURES_DIR, "report.html"),
             "study": ("results", FIGURES_DIR, "report.html")}


def json_of(prefix: str | os.PathLike) -> Path:
    """PREFIX.json (a prefix may hold dots, so not Path.with_suffix)."""
    return Path(f"{os.fspath(prefix)}.json")


def slug(label: str) -> str:
    """A net's label as a file name: runs of other characters become one '-'."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", label).strip("-") or "net"


def training_metrics(train_dir: str | os.PathLike) -> Path:
    """The per-epoch losses and errors a training run keeps (`respaths train --out DIR`)."""
    return Path(train_dir) / "metrics.csv"


def training_checkpoint(train_dir: str | os.PathLike) -> Path:
    """A training run's latest end-of-epoch checkpoint (respaths.io.checkpoint); while it is replaced, the
    previous one is checkpoint.old beside it (respaths.io.atomic.old_path)."""
    return Path(train_dir) / "checkpoint"


def training_settings(train_dir: str | os.PathLike) -> Path:
    """A training run's settings, for people (its checkpoint holds them too)."""
    return Path(train_dir) / "run.json"


def prefix_lock(prefix: str | os.PathLike) -> Path:
    """The lock of a command that writes one prefix's files (`respaths layers`), not a whole directory."""
    prefix = Path(prefix)
    return prefix.parent / f".{prefix.name}{LOCK}"


def layers_prefix(method: str) -> Path:
    """Where `respaths layers` writes without --out."""
    return Path("runs") / f"layers-{method}"


@dataclass(frozen=True)
class ResultFolder:
    """The result files of one model's experiments in one folder, each under a fixed name."""

    dir: Path

    NAMES = ("lesion-single", "lesion-random", "reorder", "paths")
    # the report figure a result file's own figure is (drawn beside it: PREFIX.png and .svg)
    FIGURE_OF = {"lesion-single": FIGURES["single"], "lesion-random": FIGURES["random"],
                 "reorder": FIGURES["reorder"], "paths": FIGURES["paths"]}

    def __post_init__(self) -> None:
        object.__setattr__(self, "dir", Path(self.dir))

    def lesion(self, mode: str) -> Path:
        """mode: single or random."""
        return self.dir / f"lesion-{mode}"

    @property
    def reorder(self) -> Path:
        return self.dir / "reorder"

    @property
    def paths(self) -> Path:
        return self.dir / "paths"

    def file(self, name: str) -> Path:
        """NAME.json of one of NAMES."""
        return self.dir / f"{name}.json"

    def present(self, names: tuple[str, ...] = NAMES) -> tuple[str, ...]:
        return tuple(n for n in names if self.file(n).is_file())


@dataclass(frozen=True)
class RunLayout:
    """The files of one run directory (see the module's docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @staticmethod
    def default(preset: str) -> Path:
        """Where `respaths reproduce --preset NAME` writes without --out."""
        return Path("runs") / preset

    # the run's own files
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def series_json(self) -> Path:
        """The depth series' table, in the folder of a report of several runs (respaths.study.series)."""
        return self.root / "series.json"

    @property
    def figures(self) -> Path:
        return self.root / FIGURES_DIR

    def figure(self, stem: str) -> Path:
        """The prefix of a report figure (figures/STEM.png and .svg)."""
        return self.figures / stem

    # the nets reproduce trains
    def model(self, role: str) -> Path:
        """The training run of one net (checkpoint/, metrics.csv)."""
        return self.root / "models" / role

    def checkpoint(self, role: str) -> Path:
        return training_checkpoint(self.model(role))

    SUBDIRS = ("models", "results", FIGURES_DIR)  # what --force deletes

    # the results of an image study
    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def compare(self) -> Path:
        """The folder of the compared residual nets (respaths.experiments.compare.compare_views)."""
        return self.results / "compare"

    @property
    def compare_json(self) -> Path:
        return compare_file(self.compare)

    def compared(self, role: str, mode: str) -> Path:
        """A compared net's single (mode "single") or random deletion."""
        return compared_lesion(self.compare, role, mode)

    def compared_results(self) -> list[Path]:
        """The compared nets' lesion result files, in name order."""
        return sorted(self.compare.glob("*-lesion-*.json"))

    def single(self, role: str) -> Path:
        """Single deletion of a net outside the comparison (one without shortcuts: the VGG)."""
        return self.results / f"single-{role}"

    def reorder(self, role: str) -> Path:
        return self.results / f"reorder-{role}"

    def paths(self, role: str) -> Path:
        return self.results / f"paths-{role}"

    def surviving(self, role: str) -> Path:
        return self.results / f"surviving-{role}"

    def layer_results(self) -> list[Path]:
        """`respaths layers` result files saved into the run, in name order."""
        return sorted(self.results.glob("layers-*.json"))

    # the results of a transformer's study
    @property
    def folder(self) -> ResultFolder:
        """results/ as a result folder (a transformer's study: one model, scored by its metric)."""
        return ResultFolder(self.results)


def compare_file(folder: str | os.PathLike) -> Path:
    """A comparison's summary in its folder."""
    return Path(folder) / "compare.json"


def compared_lesion(folder: str | os.PathLike, label: str, mode: str) -> Path:
    """In a comparison's folder, a net's single or random deletion, named by its label."""
    return Path(folder) / f"{slug(label)}-lesion-{mode}"
