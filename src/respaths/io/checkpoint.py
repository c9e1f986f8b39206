"""Checkpoints: a directory holding

    model.safetensors   the weights (and batch-norm statistics): data only, safe to load from anyone
    meta.json           what the weights are: model name and config, dataset and normalisation,
                        epoch, metrics, respaths version; enough to rebuild the model by name
    train_state.pt      (optional) what resuming needs: optimizer, schedule, every RNG state, the
                        data-order generator; our own file, still read with weights_only=True

A checkpoint directory is replaced as a whole: the new one is written beside it and swapped in with
two renames, so a crash at any moment leaves either the old or the new checkpoint, never a mix.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import atomic_dir, old_path, recover_dir
from .layout import training_checkpoint
from ..core import UserError
from ..models import build_from_config
from ..version import __version__

WEIGHTS, META, TRAIN_STATE = "model.safetensors", "meta.json", "train_state.pt"
FORMAT = "respaths-checkpoint/1"


def checkpoint_dir(path: str | os.PathLike) -> Path:
    """The checkpoint a user means: the directory itself, or the `checkpoint/` inside the run directory
    that `respaths train --out DIR` wrote."""
    path = recover_dir(path)
    inside = training_checkpoint(path)
    if not (path / META).is_file() and (inside.exists() or old_path(inside).is_dir()):
        return recover_dir(inside)
    return path


def is_checkpoint(path: Path) -> bool:
    """A folder respaths wrote as a checkpoint (it holds meta.json)."""
    return path.is_dir() and (path / META).is_file()


def refuse_foreign_checkpoints(train_dir: str | os.PathLike) -> None:
    """Refuse a training run's directory whose checkpoint (or checkpoint.old) is something respaths did not
    write: training would replace it."""
    ckpt = training_checkpoint(train_dir)
    for path in (ckpt, old_path(ckpt)):
        if path.exists() and not is_checkpoint(path):
            raise UserError(f"{path} is not a respaths checkpoint, and respaths would replace it; move it away "
                            f"or choose another --out (respaths never overwrites files it did not write, even "
                            f"with --force).")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any],
                    train_state: dict[str, Any] | None = None) -> Path:
    """Write model weights, meta.json (model name & config added from `model.config`) and, if given,
    the training state, replacing any checkpoint at `path` atomically."""
    with atomic_dir(path) as tmp:  # also removes what a killed save left behind, and names a full disk
        _write_checkpoint(tmp, model, meta, train_state)
    return Path(path)


def _write_checkpoint(tmp: Path, model: nn.Module, meta: dict[str, Any], train_state: dict[str, Any] | None) -> None:
    # safetensors wants plain contiguous CPU tensors; channels-last weights are converted (values unchanged).
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, tmp / WEIGHTS)
    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    config = dict(getattr(model, "config", {}) or {})
    if config:
        meta.setdefault("model", {"name": config.get("name"), "config": config})
    if "respaths_version" not in meta:
        meta["respaths_version"] = __version__
    (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    if train_state is not None:
        torch.save(train_state, tmp / TRAIN_STATE)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    path = checkpoint_dir(path)
    f = path / META
    if not f.is_file():
        raise UserError(f"{path} is not a respaths checkpoint (it has no {META}); "
                        f"give a directory written by `respaths train`.")
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{f} is damaged ({e}); retrain or restore it from a copy.") from None
    if not isinstance(meta, dict):
        raise UserError(f"{f} is damaged (it holds a JSON {type(meta).__name__}, not an object); "
                        f"retrain or restore it from a copy.")
    return meta


def read_weights(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    f = checkpoint_dir(path) / WEIGHTS
    try:
        return load_file(f, device=str(device))
    except (OSError, SafetensorError) as e:
        raise UserError(f"{f} could not be read as safetensors weights ({e}); "
                        f"retrain or restore it from a copy.") from None


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model named in meta.json with respaths.models.build_model and load its weights.

    Returns (model in eval mode on `device`, meta)."""
    meta = read_meta(path)
    try:
        config = dict(meta["model"]["config"])
        name = meta["model"]["name"] or config["name"]
    except (KeyError, TypeError):
        raise UserError(f"{Path(path) / META} does not name a respaths model; "
                        f"load its weights yourself with safetensors.torch.load_file.") from None
    model = build_from_config(config, name)
    try:
        model.load_state_dict(read_weights(path, "cpu"))
    except RuntimeError as e:
        saved_by = meta.get("respaths_version")
        hint = ("; it was saved by respaths 0.1, whose pre-activation ResNets had no BatchNorm after conv1: "
                "retrain it" if name.startswith("preresnet") and str(saved_by).startswith("0.1") else "")
        raise UserError(f"the weights in {path} do not fit the model {name} described in its meta.json "
                        f"({_first_words(e)}){hint}.") from None
    return model.to(device).eval(), meta


def _first_words(e: Exception, limit: int = 200) -> str:
    """torch's load_state_dict message, on one line and short: which keys are missing or unexpected."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    f = recover_dir(path) / TRAIN_STATE
    if not f.is_file():
        raise UserError(f"{path} holds no training state ({TRAIN_STATE}), so training cannot resume from it; "
                        f"pass --force to start over.")
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file raises any of several types
        raise UserError(f"{f} is damaged ({type(e).__name__}); pass --force to start over.") from None
