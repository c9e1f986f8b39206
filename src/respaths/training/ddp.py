"""Data-parallel training under torchrun: respaths.training.trainer's Trainer with DistributedDataParallel.

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

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import distributed
from ..core import UserError
from .trainer import Trainer, TrainConfig, autocast, evaluate, pick_device


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
        self.sync_every = 25  # a loss check is a collective over the ranks

    # -- the output directory: rank 0 decides, the others follow -------------------------------
    def claim_out_dir(self) -> Path | None:
        resume_from = distributed.on_main(super().claim_out_dir)
        cfg, resume_from = distributed.broadcast((self.cfg, resume_from))
        if self.quiet_here:
            cfg = replace(cfg, quiet=True, progress=False)
        self.cfg = replace(cfg, device=self.cfg.device)
        return resume_from

    def start_over(self) -> None:
        distributed.on_main(super().start_over)
        distributed.barrier()  # --force has finished deleting before anyone writes

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

    def epoch_batches(self) -> Iterator[tuple[Tensor, Tensor, int]]:
        return distributed.rank_batches(self.train_set, self.cfg.batch_size, self.device, augment=self.cfg.augment,
                                        generator=self.generators["data"], channels_last=self.channels_last)

    def reduce(self, *values: Tensor) -> list[Tensor]:
        return distributed.all_sum(*values)

    def train_epoch(self, bar: tqdm) -> dict[str, Any]:
        return dict(super().train_epoch(bar), ranks=self.world_size)

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
