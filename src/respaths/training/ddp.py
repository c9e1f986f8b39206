"""Data-parallel training under torchrun: respaths.training.train's Trainer with DistributedDataParallel.

    torchrun --nproc_per_node=4 --no-python respaths train --model resnet110 --dataset cifar10 ...

`respaths.training.train.train` picks this trainer when torchrun launched the process. What changes:

  data      every rank draws the same epoch order and augmentation (the one-process sequence) and
            takes its slice of each global batch of --batch-size examples (respaths.distributed.
            rank_batches): per-rank batch = batch / ranks, the same steps per epoch and learning-
            rate schedule as one process, and the data generator ends each epoch in the same state
            on any number of ranks, so a checkpoint resumes on any number;
  gradients DDP averages them over ranks; each rank's loss is scaled by its share of the global
            batch, so the average is the global batch's mean gradient even when shares differ by one;
  BN        statistics per rank (over batch / ranks examples), rank 0's running statistics kept
            (DDP broadcasts its buffers before every forward); --sync-bn: SyncBatchNorm, statistics
            over the global batch (CUDA only: PyTorch's SyncBatchNorm does not run on CPU);
  blocks    stochastic depth / fixed-m draw from a generator seeded alike on every rank: the same
            blocks everywhere, their unused parameters found by DDP (find_unused_parameters);
  outputs   rank 0 alone writes the checkpoint, metrics.csv and shows the progress bar; the test
            error is measured on a slice of the test set per rank, summed over ranks;
  warm-up   the batch error that ends it is the global batch's, so all ranks switch together.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import distributed
from ..core import UserError
from .train import Trainer, TrainConfig, autocast, evaluate, pick_device, set_active


class DistributedTrainer(Trainer):
    """Trainer for one rank of a torchrun job; see the module docstring."""

    def __init__(self, cfg: TrainConfig, datasets: Any = None):
        distributed.init()
        device = distributed.local_device(pick_device(cfg.device))  # "cuda": this rank's own GPU
        if cfg.sync_bn and device.type != "cuda" and distributed.world() > 1:
            raise UserError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm does not run on CPU); leave it "
                            "out to keep batch-norm statistics per rank.")
        self.quiet_here = not distributed.is_main()  # rank 0 speaks for all
        cfg = replace(cfg, device=str(device), **({"quiet": True, "progress": False} if self.quiet_here else {}))
        # The base class sees one process: its steps per epoch are the global batches.
        super().__init__(cfg, datasets)
        self.rank, self.world_size = distributed.rank(), distributed.world()
        if cfg.sync_bn and self.world_size > 1:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # same parameters, same tensors
        stochastic = bool(self.model.config.get("stochastic_depth") is not None or self.model.config.get("fixed_m"))
        self.eval_forward = self.forward  # the plain (or compiled) model: evaluation needs no gradient sync
        ddp = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=stochastic)
        whole_model_compiled = cfg.compile and self.forward is not self.model
        self.forward = torch.compile(ddp) if whole_model_compiled else ddp
        self.batch_total = cfg.batch_size

    # -- the output directory: rank 0 decides, the others follow -------------------------------
    def claim_out_dir(self) -> Path | None:
        resume_from = distributed.on_main(super().claim_out_dir)
        cfg, resume_from = distributed.broadcast((self.cfg, resume_from))
        if self.quiet_here:
            cfg = replace(cfg, quiet=True, progress=False)
        self.cfg = replace(cfg, device=self.cfg.device)
        distributed.barrier()  # --force has finished deleting before anyone reads
        return resume_from

    def meta(self) -> dict[str, Any]:
        return dict(super().meta(), distributed={"ranks": self.world_size, "sync_bn": bool(self.cfg.sync_bn)})

    def save(self) -> None:
        super().save()  # rank 0 only
        distributed.barrier()  # the checkpoint is complete when any rank moves on

    # -- training ------------------------------------------------------------------------------
    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with autocast(self.device, self.precision):
            logits = self.forward(x)
            loss_sum = F.cross_entropy(logits, y, reduction="sum")
        # DDP averages gradients over ranks: scaled by ranks / global batch, the average is the
        # global batch's mean gradient, whatever each rank's share of it
        self.backward_and_step(loss_sum * (self.world_size / self.batch_total))
        return loss_sum.detach(), (logits.argmax(1) != y).sum()

    def train_epoch(self, bar: tqdm) -> dict[str, Any]:
        cfg, model = self.cfg, self.model
        model.train()
        step = self.epoch * self.steps_per_epoch
        loss_sum = torch.zeros((), device=self.device)
        errors = torch.zeros((), device=self.device, dtype=torch.long)
        seen, lr, t0 = 0, self.schedule.lr(step), time.perf_counter()
        batches = distributed.rank_batches(self.train_set, cfg.batch_size, self.device, augment=cfg.augment,
                                           generator=self.generators["data"], channels_last=self.channels_last)
        for k, (x, y, total) in enumerate(batches):
            lr = self.schedule.lr(step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            set_active(model, model.draw_active(self.generators["depth"]) if hasattr(model, "draw_active") else None)
            self.batch_total = total
            batch_loss, batch_errors = self.train_step(x, y)
            loss_sum += batch_loss
            errors += batch_errors
            seen += len(y)
            if self.schedule.warming:  # every rank must leave warm-up at the same step
                global_errors, = distributed.all_sum(batch_errors)
                self.schedule.observe(step, float(global_errors) / total)
            step += 1
            bar.update(len(y))
            if (k + 1) % 25 == 0:  # a loss that is not finite on any rank stops every rank
                self.check_finite(float(distributed.all_sum(loss_sum)[0]) / max(seen, 1), k + 1)
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", err=f"{errors.item() / seen:.1%}", lr=f"{lr:g}",
                                refresh=False)
        set_active(model, None)
        seconds = time.perf_counter() - t0
        loss_sum, errors, seen = distributed.all_sum(loss_sum, errors, torch.tensor(seen, device=self.device))
        seen = int(seen)
        return {"epoch": self.epoch + 1, "lr": lr, "train_loss": loss_sum.item() / seen,
                "train_error": errors.item() / seen, "seconds": round(seconds, 3),
                "images_per_s": round(seen / seconds, 1), "ranks": self.world_size}

    def evaluate(self) -> dict[str, float]:
        """The test set split across ranks, with rank 0's batch-norm running statistics everywhere."""
        if distributed.active():
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)
        part = replace(self.test_set, images=self.test_set.images[self.rank::self.world_size],
                       labels=self.test_set.labels[self.rank::self.world_size])
        mine = (evaluate(self.model, part, batch_size=max(self.cfg.batch_size, 500), device=self.device,
                         precision=self.precision, channels_last=self.channels_last, forward=self.eval_forward)
                if len(part) else {"error": 0.0, "loss": 0.0})
        sums = torch.tensor([mine["error"] * len(part), mine["loss"] * len(part), len(part)], dtype=torch.float64)
        errors, loss, n = distributed.all_sum(*sums.to(self.device))  # CUDA tensors go over NCCL
        return {"error": round(float(errors)) / float(n), "loss": float(loss) / float(n), "n": int(n)}
