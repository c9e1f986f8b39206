"""The trainer: the He et al. CIFAR recipe, stochastic depth and fixed-m training, resumable bit for bit.

    from respaths.training.train import TrainConfig, train      # train: this Trainer, or under torchrun
    result = train(TrainConfig(model="resnet20", dataset="fashion-mnist", epochs=10, out="runs/r20"))
    result.test_error, result.checkpoint                        # respaths.training.ddp's DistributedTrainer

Recipe (He et al. 2016): SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.1, divided by 10 at
50% and 75% of the iterations (164 epochs: at epochs 82 and 123), or a cosine schedule; for 110 layers
and more, lr 0.01 until the training error drops below 80% (at most 400 iterations or one epoch).
Stochastic depth (Huang et al. 2016) and fixed-m training (Veit et al. 2016, sec. 5) are properties of
the model; the trainer draws which blocks are active for every mini-batch from its own generator.

Where the run goes (--out DIR):
    DIR/run.json        the settings that define the run (for people; the checkpoint holds them too)
    DIR/checkpoint/     the latest end-of-epoch checkpoint (see respaths.io.checkpoint)
    DIR/metrics.csv     one row per epoch
Running the same command again continues from the last finished epoch; a command with different
settings is refused unless it says --resume (continue the run as it was) or --force (start over). Every source of randomness
(weights, data order, augmentation, stochastic depth) is a seeded generator saved in the checkpoint,
so on CPU a resumed run ends with weights bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import csv
import io
import json
import math
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..io.atomic import old_path, recover_dir, write_text
from ..io.layout import training_checkpoint, training_metrics, training_settings
from ..io.checkpoint import (is_checkpoint, load_train_state, read_meta, read_weights, refuse_foreign_checkpoints,
                             save_checkpoint)
from ..core import UserError, eval_mode
from ..data.sources import Dataset, load_dataset
from ..data.batches import batches
from ..metrics import classify
from ..models import build_model


@dataclass
class TrainConfig:
    """Everything `respaths train` takes. Fields in RUNTIME may change when a run resumes."""

    model: str = "resnet20"
    dataset: str = "fashion-mnist"
    epochs: int = 164
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"  # step: /10 at 50% and 75%; cosine
    warmup: str = "auto"  # auto: lr/10 until train error < 80% for depth >= 110; on; off
    width: float = 1.0
    shortcut: str = "A"
    stochastic_depth: float | None = None  # p_L, the survival probability of the last block
    fixed_m: int | None = None  # exactly m residual blocks active per mini-batch
    augment: bool = True
    limit_train: int | None = None
    limit_test: int | None = None
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 elsewhere), fp32, bf16, fp16
    seed: int = 0
    # runtime: how and where, not what
    out: str | None = None  # default runs/<model>-<dataset>-seed<seed>
    data_dir: str | None = None
    device: str = "auto"
    channels_last: bool | None = None  # None: on for CPU and CUDA
    compile: bool = False
    eval_every: int = 1
    threads: int | None = None
    resume: bool = False
    force: bool = False
    progress: bool | None = None  # None: a bar when stderr is a terminal
    quiet: bool = False
    sync_bn: bool = False  # under torchrun: SyncBatchNorm over all ranks (CUDA); see respaths.training.ddp


RUNTIME = {"out", "data_dir", "device", "channels_last", "compile", "eval_every", "threads", "resume", "force",
           "progress", "quiet", "sync_bn"}


def run_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings that define a run's result."""
    return {k: v for k, v in asdict(cfg).items() if k not in RUNTIME}


@dataclass
class TrainResult:
    out: Path
    checkpoint: Path
    test_error: float
    test_loss: float
    history: list[dict[str, Any]]
    model: nn.Module = field(repr=False)
    meta: dict[str, Any] = field(repr=False)


# ---------------------------------------------------------------------------------------------
# Device and precision


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name} was asked for but this torch sees no CUDA GPU; use --device cpu.")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"  # CPUs without bf16 units (AVX2 only) run bf16 several times slower
    if precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}.")
    return precision


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# The learning rate


class LRSchedule:
    """lr for every iteration: optional warm-up, then step decay or cosine. Stateful only in warm-up."""

    def __init__(self, base_lr: float, total_steps: int, kind: str = "step", warmup: bool = False,
                 warmup_steps: int = 400):
        if kind not in ("step", "cosine"):
            raise UserError(f"schedule must be step or cosine, not {kind!r}.")
        self.base_lr, self.total_steps, self.kind = base_lr, total_steps, kind
        self.warming = warmup
        self.warmup_steps = warmup_steps

    def lr(self, step: int) -> float:
        if self.warming and step < self.warmup_steps:
            return self.base_lr / 10
        t = step / self.total_steps
        if self.kind == "cosine":
            return self.base_lr * 0.5 * (1 + math.cos(math.pi * t))
        return self.base_lr * (0.1 if t >= 0.5 else 1.0) * (0.1 if t >= 0.75 else 1.0)

    def observe(self, step: int, batch_error: float) -> None:
        """He et al.: go back to the full lr once the training error is below 80%."""
        if self.warming and (batch_error < 0.8 or step + 1 >= self.warmup_steps):
            self.warming = False

    def state_dict(self) -> dict[str, Any]:
        return {"warming": self.warming}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warming = bool(state["warming"])


# ---------------------------------------------------------------------------------------------
# Random state: everything that decides what happens next


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
        "generators": {k: g.get_state() for k, g in generators.items()},
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    for k, g in generators.items():
        g.set_state(state["generators"][k])


# ---------------------------------------------------------------------------------------------
# Evaluation


def set_active(model: nn.Module, active: Tensor | None) -> None:
    if hasattr(model, "set_active"):
        model.set_active(active)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 500, device: torch.device | str | None = None,
             precision: str = "fp32", channels_last: bool = False,
             forward: Callable[[Tensor], Tensor] | None = None, progress: bool = False) -> dict[str, float]:
    """Test error and mean cross-entropy of `model` (eval mode, every block active) on a dataset
    (progress: a bar over its batches)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    forward = model if forward is None else forward  # (a compiled module has no truth value)
    loss_sum = torch.zeros((), device=device)
    errors = torch.zeros((), device=device, dtype=torch.long)
    with eval_mode(model):
        set_active(model, None)
        for x, y in tqdm(batches(dataset, batch_size, device, channels_last=channels_last), desc="evaluate",
                         unit="batch", total=math.ceil(len(dataset) / batch_size), disable=not progress, leave=False):
            with autocast(device, precision):
                logits = forward(x)
            ok, loss = classify(logits, y)  # summed on the device: no sync per batch
            loss_sum += loss
            errors += (~ok).sum()
    n = len(dataset)
    return {"error": errors.item() / n, "loss": loss_sum.item() / n, "n": n}


# ---------------------------------------------------------------------------------------------
# The trainer


METRICS = ["epoch", "lr", "train_loss", "train_error", "test_loss", "test_error", "seconds", "images_per_s"]


class Trainer:
    """One training run. `run()` is the epoch loop; each piece it calls is a method, so that the
    data-parallel trainer (respaths.training.ddp) sets rank/world_size, wraps the model and overrides
    the few that differ: epoch_batches (this process's part of each batch), reduce (sums over the
    ranks), train_step (its share's loss scaled), evaluate, claim_out_dir and save."""

    rank, world_size = 0, 1  # data parallelism: respaths.training.ddp.DistributedTrainer (slices of global batches)

    def __init__(self, cfg: TrainConfig, datasets: tuple[Dataset, Dataset] | None = None):
        """datasets: (train, test) already in memory, instead of loading cfg.dataset by name."""
        check(cfg)
        self.cfg = cfg
        self.out = Path(cfg.out or default_out(cfg))
        self.device = pick_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else self.device.type != "mps"
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.sync_every = 1 if self.device.type == "cpu" else 25  # steps between loss checks: a read waits for the GPU
        self.resume_from = self.claim_out_dir()
        cfg = self.cfg  # claim_out_dir may adopt the settings of the run being resumed

        if datasets is None:
            datasets = (load_dataset(cfg.dataset, cfg.data_dir, "train"), load_dataset(cfg.dataset, cfg.data_dir, "test"))
        self.train_set = datasets[0].take(cfg.limit_train).to(self.device)
        self.test_set = datasets[1].take(cfg.limit_test).to(self.device)

        torch.manual_seed(cfg.seed)
        try:
            model = build_model(cfg.model, in_channels=self.train_set.in_channels,
                                num_classes=self.train_set.num_classes, width=cfg.width, shortcut=cfg.shortcut,
                                stochastic_depth=cfg.stochastic_depth, fixed_m=cfg.fixed_m)
        except ValueError as e:
            raise UserError(str(e)) from None
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.forward = compile_model(self.model) if cfg.compile else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.steps_per_epoch = math.ceil(math.ceil(len(self.train_set) / self.world_size) / cfg.batch_size)
        deep = model.config.get("depth", 0) >= 110
        self.schedule = LRSchedule(cfg.lr, cfg.epochs * self.steps_per_epoch, cfg.schedule,
                                   warmup=cfg.warmup == "on" or (cfg.warmup == "auto" and deep),
                                   warmup_steps=min(400, self.steps_per_epoch))
        # Separate generators, so that e.g. turning on stochastic depth leaves the data order alone.
        # Under data parallelism every rank seeds them alike: same order (then sharded), same blocks.
        self.generators = {"data": torch.Generator().manual_seed(2 * cfg.seed),
                           "depth": torch.Generator().manual_seed(2 * cfg.seed + 1)}
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        if self.resume_from is not None:
            self.restore(self.resume_from)
        if cfg.force:  # everything checked: --force is the last step before the work
            self.start_over()
        self.out.mkdir(parents=True, exist_ok=True)  # the run may start writing
        write_text(training_settings(self.out), json.dumps({"settings": run_settings(cfg)}, indent=1) + "\n")

    # -- the output directory ------------------------------------------------------------------
    def claim_out_dir(self) -> Path | None:
        """Refuse to mix runs in one directory; return the checkpoint to resume from, if any.

        Reads only: --force deletes the old run in start_over, once every option has been checked and the
        model built, and run.json is written then too."""
        cfg, out = self.cfg, self.out
        refuse_foreign_checkpoints(out)  # also for train() from Python, which the CLI's check_out_dir does not see
        if cfg.force:
            return None
        ckpt = recover_dir(training_checkpoint(out))
        if not is_checkpoint(ckpt):
            if cfg.resume:
                self.log(f"nothing to resume in {out}; starting a new run")
            return None
        saved = read_meta(ckpt).get("train") or {}
        if not isinstance(saved, dict):
            raise UserError(f"{ckpt / 'meta.json'} is damaged (its \"train\" field is not an object); "
                            f"pass --force to start over.")
        ours = run_settings(cfg)
        diff = [k for k in ours if k in saved and saved[k] != ours[k]]
        if diff and not cfg.resume:
            k = diff[0]
            raise UserError(f"{out} holds a different run ({k} is {saved[k]!r} there, {ours[k]!r} now); "
                            f"pass --resume to continue that run, --force to start over, or choose another --out.")
        if diff:
            self.cfg = replace(cfg, **{k: saved[k] for k in diff})
            self.log(f"continuing the run in {out} with its own settings "
                     f"({', '.join(f'{k}={saved[k]!r}' for k in diff)})")
        return ckpt

    def start_over(self) -> None:
        """--force: delete the run's own files in out (nothing else there)."""
        out = self.out
        for p in (training_checkpoint(out), old_path(training_checkpoint(out)), training_metrics(out),
                  training_settings(out)):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    # -- checkpoints ---------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        data = self.train_set.info()
        data.update(train_examples=len(self.train_set), test_examples=len(self.test_set))
        return {"dataset": data, "epoch": self.epoch, "epochs": self.cfg.epochs,
                "metrics": self.history[-1] if self.history else {}, "history": self.history,
                "train": run_settings(self.cfg), "precision": self.precision}

    def train_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "rng": rng_state(self.generators)}

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(training_checkpoint(self.out), self.model, self.meta(), self.train_state())
            write_metrics(training_metrics(self.out), self.history)

    def restore(self, ckpt: Path) -> None:
        meta, state = read_meta(ckpt), load_train_state(ckpt)
        try:
            self.model.load_state_dict(read_weights(ckpt, self.device))
        except RuntimeError as e:
            raise UserError(f"the checkpoint in {ckpt} does not fit {self.cfg.model} "
                            f"({str(e).splitlines()[0]}); pass --force to start over.") from None
        try:  # a foreign or damaged train_state.pt is a KeyError, TypeError or ValueError here
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            if self.scaler and state["scaler"]:
                self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"], self.generators)
            self.epoch = int(state["epoch"])
            self.history = list(meta.get("history", []))[: self.epoch]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise UserError(f"{ckpt / 'train_state.pt'} does not hold the training state of this run "
                            f"({type(e).__name__}: {e}); pass --force to start over.") from None
        self.log(f"resuming {self.out} after epoch {self.epoch} of {self.cfg.epochs}")

    # -- training ------------------------------------------------------------------------------
    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One SGD step on one batch; returns the summed loss and the number of errors (on device)."""
        with autocast(self.device, self.precision):
            logits = self.forward(x)
            loss = F.cross_entropy(logits, y)
        self.backward_and_step(loss)
        return loss.detach() * len(y), (logits.argmax(1) != y).sum()

    def backward_and_step(self, loss: Tensor) -> None:
        """Backpropagate loss (through the fp16 grad scaler when there is one) and take an SGD step."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    def epoch_batches(self) -> Iterator[tuple[Tensor, Tensor, int]]:
        """One epoch of training batches as (x, y, n): this process's examples of each batch, and n,
        the batch's size over all processes (here len(y); DistributedTrainer: a slice of each)."""
        cfg = self.cfg
        for x, y in batches(self.train_set, cfg.batch_size, self.device, train=True, augment=cfg.augment,
                            generator=self.generators["data"], channels_last=self.channels_last):
            yield x, y, len(y)

    def reduce(self, *values: Tensor) -> list[Tensor]:
        """Sums of scalar tensors over all processes: here the values themselves (DistributedTrainer:
        over the ranks, one collective)."""
        return list(values)

    def train_epoch(self, bar: tqdm) -> dict[str, Any]:
        model = self.model
        model.train()
        step = self.epoch * self.steps_per_epoch
        loss_sum = torch.zeros((), device=self.device)
        errors = torch.zeros((), device=self.device, dtype=torch.long)
        seen, lr, t0 = 0, self.schedule.lr(step), time.perf_counter()
        for k, (x, y, n) in enumerate(self.epoch_batches()):
            lr = self.schedule.lr(step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            set_active(model, model.draw_active(self.generators["depth"]) if hasattr(model, "draw_active") else None)
            self.batch_total = n  # the whole batch's size, which DistributedTrainer's train_step scales by
            batch_loss, batch_errors = self.train_step(x, y)
            loss_sum += batch_loss
            errors += batch_errors
            seen += len(y)
            if self.schedule.warming:  # the whole batch's error: every rank leaves warm-up at the same step
                self.schedule.observe(step, float(self.reduce(batch_errors)[0]) / n)
            step += 1
            bar.update(len(y))
            if (k + 1) % self.sync_every == 0 or k + 1 == self.steps_per_epoch:
                # a loss that is not finite on any rank stops every rank
                self.check_finite(float(self.reduce(loss_sum)[0]) / seen, k + 1)
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", err=f"{errors.item() / seen:.1%}", lr=f"{lr:g}",
                                refresh=False)
        set_active(model, None)
        seconds = time.perf_counter() - t0
        loss_sum, errors, seen = self.reduce(loss_sum, errors, torch.tensor(seen, device=self.device))
        seen = int(seen)
        return {"epoch": self.epoch + 1, "lr": lr, "train_loss": loss_sum.item() / seen,
                "train_error": errors.item() / seen, "seconds": round(seconds, 3),
                "images_per_s": round(seen / seconds, 1)}

    def check_finite(self, loss: float, step: int) -> None:
        if not math.isfinite(loss):
            kept = (f"the checkpoint of epoch {self.epoch} in {training_checkpoint(self.out)} is kept"
                    if self.epoch else "no checkpoint was written")
            raise UserError(f"the training loss became {loss} in epoch {self.epoch + 1} (step {step}), so "
                            f"training stopped; {kept}; try a lower --lr or --precision fp32.")

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.model, self.test_set, batch_size=max(self.cfg.batch_size, 500), device=self.device,
                        precision=self.precision, channels_last=self.channels_last, forward=self.forward)

    def run(self) -> TrainResult:
        cfg = self.cfg
        n = math.ceil(len(self.train_set) / self.world_size)
        self.log(f"training {cfg.model} on {len(self.train_set)} {cfg.dataset} images for {cfg.epochs} "
                 f"epoch{'s' if cfg.epochs != 1 else ''} "
                 f"on {self.device} ({self.precision}{', channels_last' if self.channels_last else ''}"
                 f"{', compiled' if cfg.compile else ''}) -> {self.out}")
        show = cfg.progress if cfg.progress is not None else None  # None: tqdm decides (a terminal or not)
        with tqdm(total=cfg.epochs * n, initial=self.epoch * n, unit="img", unit_scale=True, dynamic_ncols=True,
                  disable=(not show) if show is not None else None, smoothing=0.1) as bar:
            while self.epoch < cfg.epochs:
                bar.set_description(f"epoch {self.epoch + 1}/{cfg.epochs}")
                row = self.train_epoch(bar)
                self.check_finite(row["train_loss"], self.steps_per_epoch)
                last = self.epoch + 1 == cfg.epochs
                if last or (self.epoch + 1) % cfg.eval_every == 0:
                    test = self.evaluate()
                    row.update(test_loss=test["loss"], test_error=test["error"])
                self.history.append(row)
                self.epoch += 1
                self.save()
                self.log(epoch_line(row, cfg.epochs), bar)
        final = self.history[-1] if self.history else {}
        if final.get("test_error") is None:  # e.g. a run finished by an older command: measure now
            test = self.evaluate()
            final = dict(final, test_error=test["error"], test_loss=test["loss"])
        self.log(f"final test error {final['test_error']:.2%} (loss {final['test_loss']:.4f}) on "
                 f"{len(self.test_set)} {cfg.dataset} test images; checkpoint in {training_checkpoint(self.out)}")
        self.model.eval()
        return TrainResult(self.out, training_checkpoint(self.out), final["test_error"], final["test_loss"],
                           self.history, self.model, self.meta())

    def log(self, msg: str, bar: tqdm | None = None) -> None:
        if not self.cfg.quiet:
            (bar.write if bar is not None and not bar.disable else print)(msg)


# ---------------------------------------------------------------------------------------------
# Small pieces


def make_config(**options: Any) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"unknown training option {unknown[0]!r}; known options: {', '.join(sorted(known))}.")
    return TrainConfig(**options)


def check(cfg: TrainConfig) -> None:
    positive = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "eval_every": cfg.eval_every}
    for k, v in positive.items():
        if v < 1:
            raise UserError(f"--{k.replace('_', '-')} must be at least 1, not {v}.")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UserError(f"--lr must be a finite positive number, not {cfg.lr}.")
    if not 0 <= cfg.momentum < 1:
        raise UserError(f"--momentum must be in [0, 1), not {cfg.momentum}.")
    if not (cfg.weight_decay >= 0 and math.isfinite(cfg.weight_decay)):
        raise UserError(f"--weight-decay must be a finite number of 0 or more, not {cfg.weight_decay}.")
    if not (cfg.width > 0 and math.isfinite(cfg.width)):
        raise UserError(f"--width must be a finite positive multiplier, not {cfg.width}.")
    if cfg.stochastic_depth is not None and not 0 < cfg.stochastic_depth <= 1:
        raise UserError(f"--stochastic-depth p_L must be in (0, 1], not {cfg.stochastic_depth}.")
    if cfg.warmup not in ("auto", "on", "off"):
        raise UserError(f"--warmup must be auto, on or off, not {cfg.warmup!r}.")
    if cfg.shortcut not in ("A", "B"):
        raise UserError(f"--shortcut must be A (zero-pad) or B (projection), not {cfg.shortcut!r}.")
    if cfg.stochastic_depth is not None and cfg.fixed_m is not None:
        raise UserError("choose either --stochastic-depth or --fixed-m, not both.")


def default_out(cfg: TrainConfig) -> str:
    data = cfg.dataset.replace("imagefolder:", "folder-").replace("/", "_").strip("_")
    return f"runs/{cfg.model}-{data}-seed{cfg.seed}"


def compile_model(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """torch.compile the whole model, or each residual branch when blocks are switched per mini-batch
    (a whole-model graph would be recompiled for every pattern of active blocks)."""
    stochastic = model.config.get("stochastic_depth") is not None or model.config.get("fixed_m")
    if not stochastic:
        return torch.compile(model)
    for block in model.blocks:
        block.branch.compile()
    return model


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    line = (f"epoch {row['epoch']}/{epochs}  lr {row['lr']:g}  train loss {row['train_loss']:.4f} "
            f"error {row['train_error']:.2%}")
    if row.get("test_error") is not None:
        line += f"  test loss {row['test_loss']:.4f} error {row['test_error']:.2%}"
    return line + f"  {row['images_per_s']:.0f} img/s"


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRICS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k, "") for k in METRICS})
    write_text(path, buf.getvalue())
