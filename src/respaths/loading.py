"""Load a model from a spec, with weights from a local file; nothing is ever downloaded.

    torchvision:resnet50        torchvision.models.get_model(name, weights=None)
    timm:vit_tiny_patch16_224   timm.create_model(name, pretrained=False)
    respaths:preresnet110       respaths.models.build_model(name)
    some.module:factory         factory() (or factory(num_classes=N))
    DIR                         a respaths checkpoint directory (checkpoint.load_checkpoint)

Weights (weights=PATH) are read without running code from the file: .safetensors through
safetensors, .pt/.pth/.bin/.ckpt through torch.load(weights_only=True), which refuses any pickled
object other than tensors and plain containers. Common wrappings are undone: a state dict kept
under "state_dict", "model_state_dict", "model" or "net", and the "module." prefix of DataParallel
or "_orig_mod." of torch.compile.
"""
from __future__ import annotations

import difflib
import importlib
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .core import UserError

FORMS = ("torchvision:NAME, timm:NAME, respaths:NAME, module.path:factory, or a respaths checkpoint "
         "directory")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


def load_model(spec: str, weights: str | Path | None = None, num_classes: int | None = None,
               device: str | torch.device = "cpu", **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The model named by spec, in eval mode on device, and its meta.

    meta is the checkpoint's meta.json for a checkpoint directory, else {"model": {"spec", "num_classes"},
    "weights": PATH or None}. kwargs go to the factory (e.g. img_size=64 for a timm ViT)."""
    spec = str(spec)
    if Path(spec).is_dir() or Path(spec + ".old").is_dir():  # .old: a save that a crash interrupted
        model, meta = from_checkpoint(Path(spec), weights, num_classes)
    else:
        model = build(spec, num_classes, kwargs)
        if weights is not None:
            load_weights(model, weights)
        meta = {"model": {"spec": spec, "num_classes": num_classes, **kwargs},
                "weights": str(weights) if weights is not None else None}
    return model.to(device).eval(), meta


def from_checkpoint(path: Path, weights: Any, num_classes: int | None) -> tuple[nn.Module, dict[str, Any]]:
    if weights is not None:
        raise UserError(f"{path} is a respaths checkpoint, which holds its own weights; drop the weights "
                        f"file or give a model spec such as torchvision:resnet50 with it.")
    try:
        from .checkpoint import load_checkpoint
    except ImportError:
        raise UserError(f"{path} is a directory, but this respaths has no checkpoint support; give a "
                        f"model spec ({FORMS}).") from None
    model, meta = load_checkpoint(path)
    have = getattr(model, "config", {}).get("num_classes") if isinstance(getattr(model, "config", None), dict) else None
    if num_classes is not None and have is not None and have != num_classes:
        raise UserError(f"the checkpoint {path} classifies {have} classes, not {num_classes}; drop "
                        f"num_classes or use a checkpoint trained for that dataset.")
    return model, meta


def build(spec: str, num_classes: int | None, kwargs: dict[str, Any]) -> nn.Module:
    source, sep, name = spec.partition(":")
    if not sep or not source or not name:
        hint = " (a weights file goes in weights=, with a model spec)" if spec.endswith((".safetensors",) + TORCH_SUFFIXES) else ""
        raise UserError(f"{spec!r} is neither a checkpoint directory nor a model spec{hint}; give one of {FORMS}.")
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    if source == "torchvision":
        tv = optional("torchvision", spec, "vision")
        known = tv.models.list_models()
        if name not in known:
            raise UserError(f"torchvision has no model {name!r}{close(name, known)}.")
        return tv.models.get_model(name, weights=None, **kwargs)
    if source == "timm":
        timm = optional("timm", spec, "timm")
        if not timm.is_model(name):
            raise UserError(f"timm has no model {name!r}{close(name, timm.list_models())}.")
        return timm.create_model(name, pretrained=False, **kwargs)
    if source == "respaths":
        from .models import build_model
        return build_model(name, **kwargs)
    try:
        module = importlib.import_module(source)
    except ImportError as e:
        raise UserError(f"cannot import {source!r} for the model spec {spec!r} ({e}); give one of {FORMS}.") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UserError(f"the module {source} has no function {name!r} to build the model from.")
    try:
        model = factory(**kwargs)
    except TypeError as e:
        raise UserError(f"{spec}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: {e}.") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module.")
    return model


def optional(package: str, spec: str, extra: str):
    try:
        return importlib.import_module(package)
    except ImportError:
        raise UserError(f"{spec} needs {package}, which is not installed; pip install 'respaths[{extra}]'.") from None


def close(name: str, known: list[str]) -> str:
    near = difflib.get_close_matches(name, known, n=3)
    return f" (did you mean {', '.join(near)}?)" if near else ""


# ---------------------------------------------------------------------------------------------
# Weights

def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a local file, never running code stored in it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"the weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            state = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error type for a damaged header
            raise UserError(f"{path} is not a readable safetensors file ({e}).") from None
    elif path.suffix in TORCH_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise UserError(f"{path} holds pickled objects other than tensors, and respaths never unpickles "
                            f"those; save its state_dict (or convert it to .safetensors) where you trust it.") from None
        except Exception as e:
            raise UserError(f"{path} is not a readable PyTorch file ({e}).") from None
    else:
        raise UserError(f"{path} is neither .safetensors nor a PyTorch file ({', '.join(TORCH_SUFFIXES)}); "
                        f"convert it to .safetensors.")
    return unwrap(state, path)


def unwrap(state: Any, path: Path) -> dict[str, Tensor]:
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict (a mapping from parameter names to tensors).")
    for prefix in ("module.", "_orig_mod."):  # DataParallel, torch.compile
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local weights file into model; a mismatch is one sentence naming the first differences."""
    state = read_state_dict(path)
    own = model.state_dict()
    # old checkpoints lack BatchNorm's num_batches_tracked, which plays no part at test time
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{len(l)} {what} (first: {', '.join(l[:3])})" for l, what in
                 ((missing, "missing"), (unexpected, "unexpected"), (wrong, "with another shape")) if l]
        raise UserError(f"the weights in {path} do not fit {type(model).__name__}: {'; '.join(parts)}; "
                        f"check the model spec and num_classes.")
    model.load_state_dict(state, strict=False)
    return model
