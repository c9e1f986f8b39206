"""Batches of a Dataset: normalisation, the paper's augmentation (pad 4, random crop, flip), epoch order."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from .sources import Dataset


# Batches


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 [B, C, H, W] -> float32 (x/255 - mean) / std, computed as x * (1/(255 std)) - mean/std.

    In place on the new float tensor: on a CPU, an NCHW-contiguous multiply and add are several
    times faster than one broadcasting addcmul or the same ops on a channels-last tensor."""
    c = images.shape[1]
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=images.device).view(1, c, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=images.device).view(1, c, 1, 1)
    return images.float().mul_(scale).add_(shift)


def draw_augmentation(batch_size: int, pad: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Random crop offsets and flips for one batch: int64 [B, 3] of (dy, dx, flip), from a CPU generator."""
    offsets = torch.randint(0, 2 * pad + 1, (batch_size, 2), generator=generator)
    flips = torch.randint(0, 2, (batch_size, 1), generator=generator)
    return torch.cat([offsets, flips], dim=1)


def crop_and_flip(images: Tensor, params: Tensor, pad: int = 4) -> Tensor:
    """Crop each image from its zero-padded copy at (dy, dx) and flip it if asked, in one gather.

    Equivalent to torchvision's RandomCrop(size, padding=pad) followed by RandomHorizontalFlip(),
    image by image. Output pixel (i, j) of image n reads padded pixel (dy + i, dx + j), or
    (dy + i, dx + w-1-j) when flipped (crop first, then flip)."""
    b, c, h, w = images.shape
    params = params.to(images.device)
    dy, dx, flip = params[:, 0:1], params[:, 1:2], params[:, 2:3].bool()
    padded = F.pad(images, (pad, pad, pad, pad))  # [B, C, H + 2 pad, W + 2 pad]
    rows = dy + torch.arange(h, device=images.device)  # [B, H]
    cols = torch.arange(w, device=images.device).expand(b, w)
    cols = torch.where(flip, w - 1 - cols, cols) + dx  # [B, W]
    where = rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]  # flat index into each padded plane
    where = where.view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, where).view(b, c, h, w)


def epoch_order(n: int, generator: torch.Generator | None = None) -> Tensor:
    """The order of the examples for one training epoch. (A data-parallel trainer shards this.)"""
    return torch.randperm(n, generator=generator)


def batches(dataset: Dataset, batch_size: int, device: torch.device | str = "cpu", train: bool = False,
            augment: bool = False, generator: torch.Generator | None = None, *, order: Tensor | None = None,
            channels_last: bool = False, drop_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield normalised float32 (x, y) batches on `device`.

    train: visit the examples in a random order (from `generator`) unless `order` gives one.
    augment: random crop with 4-pixel zero padding and horizontal flip, drawn from `generator`.
    Random numbers are drawn in a fixed sequence: the order first, then one draw per batch."""
    device = torch.device(device)
    images = dataset.images.to(device)  # no copy when the dataset already lives there
    labels = dataset.labels.to(device)
    if order is None:
        order = epoch_order(len(labels), generator) if train else torch.arange(len(labels))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        idx = idx.to(device)
        x = images[idx]
        if augment:
            x = crop_and_flip(x, draw_augmentation(len(idx), 4, generator))
        x = normalize(x, dataset.mean, dataset.std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, labels[idx]


# ---------------------------------------------------------------------------------------------
