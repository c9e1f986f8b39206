"""The batches the engine walks: image datasets, (inputs, targets) lists, or dict batches (text)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

import torch
from torch import Tensor

from ..data.batches import batches
from ..metrics import inputs_of, to_device

# Data

def iterate_batches(data: Any, batch_size: int, device: torch.device) -> Iterator[tuple[Any, Tensor]]:
    """(inputs, labels) on device from a respaths Dataset, an (inputs, labels) pair of tensors, or
    any iterable of (inputs, labels) batches (used as given)."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        yield from batches(data, batch_size, device)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        for s in range(0, len(y), batch_size):
            yield x[s:s + batch_size].to(device), y[s:s + batch_size].to(device)
    else:
        for x, y in data:
            yield (x.to(device) if isinstance(x, Tensor) else x), y.to(device)


def iterate_data(data: Any, batch_size: int, device: torch.device) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(what the stem takes, the batch as a dict) on device: a list of dict batches (input_ids,
    attention_mask, labels, ...; metrics.inputs_of gives the stem's part) is used as given; any other
    data goes through iterate_batches, each batch a dict {"labels": labels}."""
    if isinstance(data, (tuple, list)) and data and all(isinstance(b, Mapping) for b in data):
        for b in data:
            b = to_device(b, device)
            yield inputs_of(b), b
    else:
        for x, y in iterate_batches(data, batch_size, device):
            yield x, {"labels": y}


def first_examples(x: Any, n: int) -> Any:
    """The first n examples of a batch (a probe): of a tensor, or of the tensors in a dict whose first
    dimension is the batch's (the first tensor's)."""
    if isinstance(x, Tensor):
        return x[:n]
    if isinstance(x, Mapping):
        size = batch_length(dict(x))
        return {k: v[:n] if isinstance(v, Tensor) and v.dim() > 0 and len(v) == size else v for k, v in x.items()}
    return x


def batch_length(batch: dict[str, Any]) -> int:
    t = batch.get("labels")
    if t is None:
        t = next((v for v in batch.values() if isinstance(v, Tensor) and v.dim() > 0), None)
    return 0 if t is None else len(t)


def count_examples(data: Any) -> int | None:
    if hasattr(data, "labels"):
        return len(data.labels)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], Tensor):
        return len(data[1])
    return None


# ---------------------------------------------------------------------------------------------
