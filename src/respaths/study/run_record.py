"""run.json, the record a run directory keeps of itself: which settings, when each step ran and for how
long (wall clock and CPU), and the environment (versions, device, host).

Shared by `respaths reproduce` (whose settings are a preset) and `respaths study` (a budget and the
models studied); a rerun into the same directory with other settings is refused.
"""
from __future__ import annotations

import json
import platform
import resource
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import torch

from ..io.atomic import old_path, write_text
from ..io.checkpoint import is_checkpoint
from ..io.layout import FIGURES, RunLayout, training_checkpoint, training_metrics, training_settings
from ..io.results import written_by_respaths
from ..core import UserError
from ..version import __version__


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def settings_record(p: Any) -> dict[str, Any]:
    """The settings (a reproduce preset, a study's settings: anything with .config()) as run.json
    records them (tuples become lists)."""
    return json.loads(json.dumps(p.config()))


class RunRecord:
    """run.json: which preset, when each step ran and for how long; refuses a different preset."""

    def __init__(self, out: Path, p: Any, force: bool):
        self.path = RunLayout(out).run_json
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
            if old["preset"] != settings_record(p):
                raise UserError(f"{out} holds a run of another preset ({old['preset'].get('name')}) "
                                f"or settings; choose another --out or pass --force to start over.")
            self.data = old
        else:
            if force:
                delete_own_files(out)
            self.data = {"schema": "respaths.run/1", "preset": p.config(), "steps": {}, "models": {}}
        self.data["environment"] = environment()
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)

    def run_step(self, name: str, done: bool, fn: Any, what: str, log: Any, note_untimed: bool = True) -> None:
        """Run one step of the study unless done (said in the log), and record its wall and CPU time.

        A step found done with no time recorded was computed outside this run's calls (a piece under
        torchrun, say): it is recorded as untimed, so the report's total says it leaves it out. Not with
        note_untimed=False: reproduce's reused models were not a step of this run at all."""
        if done:
            log(f"[respaths] {what}: already done, kept")
            if note_untimed and name not in self.data["steps"]:
                self.data["steps"][name] = {"timed": False, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
                self.save()
            return
        log(f"[respaths] {what} ...")
        t, c = time.perf_counter(), cpu_time()
        fn()
        self.step(name, time.perf_counter() - t, cpu_time() - c)

    def step(self, name: str, seconds: float, cpu_seconds: float, accumulate: bool = True) -> None:
        """Add a finished (part of a) step: wall-clock and CPU time (all threads) accumulate over resumes
        (a step redone from scratch each time, like the report, replaces its time instead)."""
        prev = self.data["steps"].get(name, {}) if accumulate else {}
        self.data["steps"][name] = {"seconds": round(prev.get("seconds", 0.0) + seconds, 2),
                                    "cpu_seconds": round(prev.get("cpu_seconds", 0.0) + cpu_seconds, 2),
                                    "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.save()


def delete_own_files(out: Path) -> None:
    """--force: delete what respaths wrote under out's models/, results/ and figures/, and keep everything
    else there (a user's notes, data or plots); folders left empty go too.

    Ours are: in models/ each training run's checkpoint (a folder with meta.json), checkpoint.old,
    metrics.csv and run.json, beside such a checkpoint; in results/ result files with respaths' schema
    (io.results.written_by_respaths) and the CSV and figures written beside one (PREFIX.csv, .png, .svg);
    in figures/ the report's figures, by their stems. A figure also has to be one matplotlib drew (a PNG or
    SVG whose head names it), as respaths' are: a same-named file of the user's is not ours."""
    layout = RunLayout(out)
    for run in sorted((out / "models").glob("*")) if (out / "models").is_dir() else []:
        ckpts = (training_checkpoint(run), old_path(training_checkpoint(run)))
        if run.is_dir() and any(is_checkpoint(p) for p in ckpts):
            for p in ckpts:
                if is_checkpoint(p):
                    shutil.rmtree(p)
            for p in (training_metrics(run), training_settings(run)):
                p.unlink(missing_ok=True)
    results = sorted(layout.results.rglob("*")) if layout.results.is_dir() else []
    documents = [p for p in results if p.suffix in (".json", ".jsonl") and written_by_respaths(p)]
    prefixes = {p.with_name(p.name.removesuffix(".partial.jsonl").removesuffix(".json")) for p in documents}
    beside = [p.with_name(p.name + ext) for p in prefixes for ext in (".csv", ".png", ".svg")]
    # a matplotlib plot of the user's in figures/ is not ours: only the stems the report draws are
    stems = {*FIGURES.values(), *(p.stem for p in layout.layer_results() if p in documents)}
    figures = [layout.figures / f"{stem}{ext}" for stem in stems for ext in (".png", ".svg")]
    for p in [*documents, *sorted(beside), *sorted(figures)]:
        if p.is_file() and (drawn_by_matplotlib(p) if p.suffix in (".png", ".svg") else written_by_respaths(p)):
            p.unlink()
    for sub in RunLayout.SUBDIRS:
        folders = sorted((p for p in (out / sub).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for p in [*folders, out / sub] if (out / sub).is_dir() else []:
            if not any(p.iterdir()):
                p.rmdir()


def drawn_by_matplotlib(path: Path) -> bool:
    """A .png or .svg that matplotlib wrote (its PNG Software chunk, its SVG metadata name it)."""
    if path.suffix not in (".png", ".svg"):
        return False
    with open(path, "rb") as f:
        return b"Matplotlib" in f.read(4096)


def cpu_time() -> float:
    """CPU seconds of this process, all threads (on a shared machine, less noisy than the wall clock)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def environment() -> dict[str, Any]:
    import matplotlib
    import numpy
    import scipy

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
