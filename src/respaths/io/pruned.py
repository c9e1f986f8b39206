"""A pruned model on disk: the directory `respaths prune` (and respaths.save_pruned) writes.

    model.safetensors    the weights of a pruned image model (a Hugging Face model: its own
                         save_pretrained files instead)
    respaths_prune.json  what was removed and why, the metric before and after, and how to rebuild
                         the model ("base": the model before pruning; "removed": its blocks that went;
                         "steps": a model pruned again, the blocks each pruning removed)

The directory is written whole or not at all (io.atomic.atomic_dir). Rebuilding the model needs the
model sources, so it is respaths.opening.load_pruned; this module only reads and writes the files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import safetensors.torch
from safetensors import SafetensorError
from torch import Tensor, nn

from ..core import UserError
from .atomic import atomic_dir

PRUNE_META = "respaths_prune.json"
FORMAT = "respaths.pruned/2"  # /1: removed blocks kept their slots (a Skipped module each); read too
FORMATS = ("respaths.pruned/1", FORMAT)
WEIGHTS = "model.safetensors"


def save_weights(model: nn.Module) -> Callable[[Path], None]:
    """A writer of model's state dict into DIR/model.safetensors, for write_pruned."""
    # through the module, so that a test can stand in for it (a full disk)
    return lambda directory: safetensors.torch.save_file(
        {k: t.detach().cpu().contiguous() for k, t in model.state_dict().items()}, str(directory / WEIGHTS))


def write_pruned(out: str | Path, info: dict[str, Any], write_model: Callable[[Path], None]) -> Path:
    """Replace the directory out, as a whole, by what write_model(directory) writes and PRUNE_META
    holding info."""
    with atomic_dir(out) as tmp:  # a full disk, as torch or safetensors report it, is an OSError naming out
        write_model(tmp)
        (tmp / PRUNE_META).write_text(json.dumps({"format": FORMAT, **info}, indent=1) + "\n")
    return Path(out)


def read_pruned(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(the description, the weights) of a pruned image model's directory."""
    path = Path(path)
    try:
        info = json.loads((path / PRUNE_META).read_text())
    except (OSError, ValueError):
        raise UserError(f"{path} holds no readable {PRUNE_META}; give a directory written by respaths prune.") from None
    if not isinstance(info, dict) or info.get("format") not in FORMATS:
        raise UserError(f"{path / PRUNE_META} is not a respaths pruned-model description; give a directory "
                        f"written by respaths prune.")
    try:
        state = safetensors.torch.load_file(str(path / WEIGHTS))
    except (OSError, SafetensorError) as e:
        raise UserError(f"{path / WEIGHTS} could not be read as safetensors weights ({e}); write it again with "
                        f"respaths prune.") from None
    return info, state
