"""Weights from a local file into a model (the model itself comes from respaths.opening's sources).

Weights are read without running code from the file: .safetensors through
safetensors, .pt/.pth/.bin/.ckpt through torch.load(weights_only=True), which refuses any pickled
object other than tensors and plain containers. Common wrappings are undone: a state dict kept
under "state_dict", "model_state_dict", "model" or "net", and the "module." prefix of DataParallel
or "_orig_mod." of torch.compile.
"""
from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..core import UserError
from ..models import Net, ZeroPadShortcut

SAFETENSORS_HINT = b"{"  # a safetensors file: 8-byte little-endian header length, then a JSON header
CONTAINERS = ("state_dict", "model_state_dict", "model", "net", "model_ema", "state_dict_ema", "ema")
PREFIXES = ("module.", "_orig_mod.", "model.")  # DataParallel/DDP, torch.compile, Lightning and others


def file_format(path: Path) -> str:
    """'safetensors', 'torch' (zip or legacy pickle) or 'unknown', from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == SAFETENSORS_HINT and int.from_bytes(head[:8], "little") < (1 << 30):
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save's zip, or its legacy pickle
        return "torch"
    return "unknown"


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], list[str]]:
    """A state dict from a local file, never running code stored in it, and what was undone to get it."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"the weights file {path} is a directory; give the weights file itself (.safetensors, .pt, "
                        f".pth, .th), or give a checkpoint directory as the model.")
    if not path.is_file():
        raise UserError(f"the weights file {path} does not exist.")
    kind = file_format(path)
    if kind == "safetensors":
        from safetensors.torch import load_file
        try:
            state = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error type for a damaged header
            raise UserError(f"{path} is not a readable safetensors file ({e}).") from None
    elif kind == "torch":
        import warnings
        try:
            with warnings.catch_warnings():  # torch adds a 2-line warning of its own to the refusal
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise UserError(f"{path} holds pickled objects other than tensors, and respaths never unpickles "
                            f"those; save its state_dict (or convert it to .safetensors) where you trust it.") from None
        except Exception as e:
            raise UserError(f"{path} is not a readable PyTorch file ({str(e).splitlines()[0] if str(e) else e}).") from None
    else:
        raise UserError(f"{path} is neither a safetensors file nor a torch.save file (judged by its first "
                        f"bytes, whatever its extension); convert it to .safetensors.")
    return unwrap(state, path)


def unwrap(state: Any, path: Path) -> tuple[dict[str, Tensor], list[str]]:
    done: list[str] = []
    while isinstance(state, dict) and not (state and all(isinstance(v, Tensor) for v in state.values())):
        key = next((k for k in CONTAINERS if isinstance(state.get(k), dict)), None)
        if key is None:
            break
        state, done = state[key], done + [f"took [{key!r}]"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict (a mapping from parameter names to tensors).")
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                done.append(f"stripped {prefix!r}")
                stripped = True
    return state, done


AKAMASTER = re.compile(r"layer(\d)\.(\d+)\.(conv1|bn1|conv2|bn2)\.(.+)")
AKAMASTER_PART = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4}


def map_akamaster(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """akamaster/pytorch_resnet_cifar10's names (conv1, bn1, layerS.J.conv1, linear) in respaths'
    resnet{6n+2} names, or None when state is not in that layout or model is no option-A resnet.

    Its option-A shortcut pads planes // 4 zero channels on each side where respaths pads after the
    input's channels, so the model's ZeroPadShortcuts are set to pad in front as well."""
    if not isinstance(model, Net) or "linear.weight" not in state or "conv1.weight" not in state:
        return None
    if model.config.get("shortcut") != "A" or model.config.get("preact") or "head.2.weight" not in model.state_dict():
        return None
    blocks = len(model.blocks)
    n = blocks // 3
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if k.startswith(("conv1.", "bn1.")):
            out[f"stem.{0 if k.startswith('conv1.') else 1}.{k.split('.', 1)[1]}"] = v
        elif k.startswith("linear."):
            out[f"head.2.{k.split('.', 1)[1]}"] = v
        elif m := AKAMASTER.fullmatch(k):
            s, j, part, rest = int(m[1]), int(m[2]), m[3], m[4]
            out[f"blocks.{(s - 1) * n + j}.branch.{AKAMASTER_PART[part]}.{rest}"] = v
        else:
            out[k] = v  # left as it is: the strict check below names it
    for b in model.blocks:
        if isinstance(b.shortcut, ZeroPadShortcut):
            b.shortcut.front = b.shortcut.pad // 2
    model.config["zero_pad"] = "both"  # so that a checkpoint or pruned export rebuilds it the same way
    return out


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local weights file into model; a mismatch is one sentence naming the first differences."""
    state, done = read_state_dict(path)
    if (mapped := map_akamaster(model, state)) is not None:
        state, done = mapped, done + ["renamed akamaster's CIFAR ResNet keys (conv1, layerS.J, linear) to "
                                      "respaths' and set the option-A shortcuts to pad on both sides"]
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
    if done:
        print(f"weights {path}: {'; '.join(done)}", file=sys.stderr)
    return model
