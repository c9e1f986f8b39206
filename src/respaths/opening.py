"""open_model: the one way a command opens the model it studies, with its data as the model expects it.

A model comes as
  - a respaths checkpoint or run directory: it names its dataset and supplies its own normalisation;
  - a Hugging Face directory (save_pretrained, tokenizer beside it): the data is a text file;
  - a llama.cpp GGUF file (model and tokenizer in one file, read by transformers): as a directory;
  - a spec (torchvision:resnet18, timm:NAME, respaths:resnet20, module.path:factory) with a weights
    file: the dataset is named and the preprocessing is explicit (normalize="imagenet"|"dataset", or
    mean and std). The chosen values go in `description`, which every result file's meta records.

The returned OpenedModel holds the model, its view, the data (a respaths Dataset of images, or a list
of token batches), the metric that fits the task ("classifier", "lm" or "cosine") and the description.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapters import view as make_view
from .adapters.hf import load as load_hf
from .adapters.hf import load_gguf
from .core import ResidualView, UserError
from .data.sources import load_dataset
from .engine.batching import iterate_batches
from .io.loading import load_model
from .metrics import metric_for
from .data.text import read_text

NORMALIZE = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


@dataclass
class OpenedModel:
    model: nn.Module
    view: ResidualView
    data: Any  # a respaths Dataset (images) or a list of batches (text); None when no data was asked for
    metric: str  # "classifier" | "lm" | "cosine"
    description: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = None
    warnings: list[str] = field(default_factory=list)  # why the numbers may mean little (see degenerate_warnings)


def is_hf_dir(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file()


def is_gguf(path: str | Path) -> bool:
    """A llama.cpp GGUF file, by its name (opening it says whether it really is one)."""
    return Path(path).suffix.lower() == ".gguf" and not Path(path).is_dir()


def is_transformers_source(path: str | Path) -> bool:
    """What open_hf opens: a Hugging Face directory or a GGUF file."""
    return is_hf_dir(path) or is_gguf(path)


def weights_fingerprint(model: nn.Module) -> str:
    """A digest of every tensor of the state dict (names, shapes, dtypes and values): a result file
    records it so that a later command can tell whether it is given the same model."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def floats(text: str | None, option: str, channels: int) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise UserError(f"{option} {text!r} is not a comma-separated list of numbers; give e.g. 0.485,0.456,0.406.") from None
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise UserError(f"{option} gives {len(values)} values but the images have {channels} channels; give "
                        f"one value per channel.")
    return values


def preprocessing(data: Any, normalize: str | None, mean: str | None, std: str | None,
                  own: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """data normalised as the model expects, and the values chosen (for the meta).

    own: the normalisation a respaths checkpoint was trained with; it wins, and asking for another
    is refused (it would silently change every number)."""
    if (mean is None) != (std is None):
        raise UserError("--mean and --std go together; give both (or --normalize imagenet|dataset).")
    if mean is not None and normalize is not None:
        raise UserError("give either --normalize or --mean/--std, not both.")
    if own is not None:
        if mean is not None or normalize is not None:
            raise UserError("a respaths checkpoint supplies its own normalisation; drop --normalize/--mean/--std.")
        m, s, name = tuple(own.get("mean", data.mean)), tuple(own.get("std", data.std)), "checkpoint"
    elif mean is not None:
        m, s, name = floats(mean, "--mean", data.in_channels), floats(std, "--std", data.in_channels), "given"
        if any(v <= 0 for v in s):
            raise UserError(f"--std {std} has a value that is not positive; standard deviations are > 0.")
    elif normalize == "imagenet":
        if data.in_channels != 3:
            raise UserError(f"--normalize imagenet needs RGB images, but {data.name} has {data.in_channels} channel(s).")
        (m, s), name = NORMALIZE["imagenet"], "imagenet"
    elif normalize in (None, "dataset"):
        m, s, name = tuple(data.mean), tuple(data.std), "dataset"
    else:
        raise UserError(f"unknown normalisation {normalize!r}; use imagenet or dataset.")
    chosen = {"normalize": name, "mean": list(m), "std": list(s)}
    if getattr(data, "name", "").startswith("imagefolder:"):
        chosen["image_size"] = list(data.image_size)
    return replace(data, mean=tuple(m), std=tuple(s)), chosen


def degenerate_warnings(view: ResidualView, x: Any, weights_given: bool) -> list[str]:
    """One line per reason this model would make the study meaningless (printed, never fatal)."""
    notes = []
    if not weights_given:
        notes.append("no weights were given, so the model is randomly initialised; its numbers say "
                     "nothing about a trained net")
    with torch.inference_mode():
        h, zero = view.stem(x), 0
        for b in view.blocks:
            if b.residual:
                out = b.branch(h)
                zero += bool(torch.is_tensor(out) and not out.any())
            h = b(h)
    residual = sum(b.residual for b in view.blocks)
    if residual and zero == residual:
        notes.append("every block's branch outputs zero (zero-initialised last layers, as timm's "
                     "zero_init_last does before training), so every deletion gives the same error and "
                     "every path longer than 0 has gradient 0; load trained weights")
    return notes


def open_model(source: str | None = None, *, spec: str | None = None, weights: str | None = None,
               num_classes: int | None = None, model_kwargs: dict[str, Any] | None = None,
               dataset: str | None = None, data_dir: str | None = None, split: str = "test",
               limit: int | None = None, normalize: str | None = None, mean: str | None = None,
               std: str | None = None, image_size: tuple[int, int] | None = None,
               text: str | None = None, seq_len: int = 128, batch_size: int = 8,
               device: str = "cpu", need_data: bool = True, split_blocks: str = "layer") -> OpenedModel:
    """Open a model and its data; see the module docstring. Every bad input is a UserError raised
    before any work: no file is read twice and nothing is written."""
    if bool(source) == bool(spec):
        raise UserError("give either a respaths checkpoint directory (or a Hugging Face model directory) or "
                        "--model SPEC (not both, not neither).")
    if source and weights:
        raise UserError("--weights goes with --model SPEC; a model directory holds its own weights.")
    if source and model_kwargs:
        raise UserError("--model-kwargs goes with --model SPEC; a model directory builds its own model.")
    if source and is_transformers_source(source):
        if dataset is not None or normalize is not None or mean is not None or image_size is not None:
            raise UserError("a Hugging Face model directory or GGUF file reads text: give --text FILE, not --dataset "
                            "or image preprocessing options.")
        return open_hf(source, text=text, seq_len=seq_len, batch_size=batch_size, limit=limit, device=device,
                       need_data=need_data, split_blocks=split_blocks)
    if text is not None:
        raise UserError("--text is for Hugging Face models; an image model takes --dataset.")
    own = trained_on = None
    if source:
        model, meta = load_model(source, device=device)
        ds = meta.get("dataset")
        own = trained_on = ds if isinstance(ds, dict) else None
        dataset = dataset or (own.get("name") if own else ds)
        if own and dataset != own.get("name"):
            own = None  # another dataset than it was trained on: its statistics do not apply
        described: dict[str, Any] = {"checkpoint": str(source)}
    if dataset is None and need_data:
        raise UserError("say which images to use with --dataset (fashion-mnist, cifar10, cifar100, "
                        "imagefolder:PATH or synthetic).")
    data, chosen = None, None
    if dataset is not None:
        data = load_dataset(dataset, data_dir, split=split, limit=limit, image_size=image_size)
        if len(data) == 0:
            raise UserError(f"{dataset} has no {split} images; check --data-dir and --limit.")
        data, chosen = preprocessing(data, normalize, mean, std, own)
    if spec:
        kwargs = dict(model_kwargs or {})
        if spec.startswith("respaths:") and data is not None:
            num_classes = num_classes or data.num_classes
            kwargs.setdefault("in_channels", data.in_channels)
        model, meta = load_model(spec, weights, num_classes=num_classes, device=device, **kwargs)
        described = {"model": spec, "weights": str(weights) if weights else None,
                     **({"model_kwargs": dict(model_kwargs)} if model_kwargs else {})}
    example = None
    if data is not None:
        example, _ = next(iter(iterate_batches(data.take(2), 2, torch.device(device))))
        first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        if isinstance(first, nn.Conv2d) and first.in_channels != data.in_channels:
            raise UserError(f"the model takes {first.in_channels}-channel images but {data.name} has "
                            f"{data.in_channels} channel(s); give a dataset the model was made for.")
    with torch.inference_mode():
        v = make_view(model.eval(), example)
        if example is not None:
            outputs = v(example).shape[-1]
            if outputs < data.num_classes:
                raise UserError(f"the model has {outputs} outputs but {data.name} has {data.num_classes} classes; "
                                f"give --num-classes or a model trained on this dataset.")
    description = {"source": described, "preprocessing": chosen, "metric": "classifier",
                   "fingerprint": weights_fingerprint(model), **({"trained_on": trained_on} if trained_on else {})}
    notes = degenerate_warnings(v, example, weights_given=bool(source or weights)) if example is not None else []
    return OpenedModel(model, v, data, "classifier", description, warnings=notes)


def open_hf(path: str, *, text: str | None, seq_len: int, batch_size: int, limit: int | None, device: str,
            need_data: bool, split_blocks: str = "layer") -> OpenedModel:
    """A Hugging Face directory or GGUF file and its text; split_blocks: one block per "layer", or "attn_mlp"."""
    if need_data and text is None:
        raise UserError("give the text to measure on with --text FILE (a UTF-8 text file).")
    if seq_len < 2 or batch_size < 1:
        raise UserError("--seq-len must be at least 2 and --batch-size at least 1.")
    if is_gguf(path):
        model, tokenizer, source = load_gguf(path)
    else:
        model, tokenizer = load_hf(path)
        source = {"hf": str(Path(path).resolve()), "model_class": type(model).__name__}
    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if text is not None and isinstance(positions, int) and seq_len > positions:
        raise UserError(f"--seq-len {seq_len} is longer than the {positions} positions {Path(path).name} was made "
                        f"for; give --seq-len {positions} or less.")
    model.to(device)
    v = make_view(model, split=split_blocks)
    batches = read_text(text, v, tokenizer, seq_len, batch_size, limit) if text is not None else None
    metric = metric_for(v, batches).name
    description = {"source": source, "text": str(Path(text).resolve()) if text else None, "seq_len": seq_len,
                   "metric": metric, "fingerprint": weights_fingerprint(model)}
    return OpenedModel(model, v, batches, metric, description, tokenizer)
