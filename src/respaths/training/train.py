"""`train`: one training run (see respaths.training.trainer), in one process or, when torchrun
launched this process as one of several, data parallel (respaths.training.ddp).

    from respaths.training.train import TrainConfig, train
    result = train(TrainConfig(model="resnet20", dataset="fashion-mnist", epochs=10, out="runs/r20"))
    result.test_error, result.checkpoint
"""
from __future__ import annotations

from typing import Any

import torch

from ..data.sources import Dataset
from ..distributed import launched
from .ddp import DistributedTrainer
from .trainer import Trainer, TrainConfig, TrainResult, make_config


def train(config: TrainConfig | dict[str, Any], datasets: tuple[Dataset, Dataset] | None = None) -> TrainResult:
    """Train (or resume) one run; see TrainConfig. Bad settings raise UserError.

    datasets: optional (train, test) Datasets to use instead of loading config.dataset by name."""
    cfg = config if isinstance(config, TrainConfig) else make_config(**config)
    threads = torch.get_num_threads()
    try:
        # torchrun started this process as one of several: DistributedDataParallel
        trainer = DistributedTrainer if launched() else Trainer
        return trainer(cfg, datasets).run()
    finally:
        torch.set_num_threads(threads)  # --threads is for this run only
