"""open_model: the one way a command opens the model it studies, with its data as the model expects it.

What a model string is gets decided once, by the registry of model sources below (SOURCES, tried in
order; the first whose detect() says yes opens it):

  pruned       a directory written by `respaths prune` from an image model (respaths_prune.json)
  hf           a Hugging Face directory (save_pretrained, tokenizer beside it): its data is a text file
  gguf         a llama.cpp GGUF file (model and tokenizer in one file, read by transformers): as hf
  checkpoint   a respaths checkpoint or run directory: it names its dataset and its normalisation
  torchvision:NAME, timm:NAME, respaths:NAME   a model of that library, with a weights file
  module.path:factory                          factory(), with a weights file

A spec's dataset is named and its preprocessing explicit (normalize="imagenet"|"dataset", or mean
and std); the chosen values go in `description`, which every result file's meta records.

Each source detects, opens and describes itself (ModelSource). A new kind of model is one subclass
added to SOURCES (register() puts it first). The returned OpenedModel holds the model, its view, the
data (a respaths Dataset of images, or a list of token batches), the metric that fits the task
("classifier", "lm" or "cosine") and the description.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import re
import sys
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
from .data.text import read_text
from .engine.batching import iterate_batches
from .io.checkpoint import load_checkpoint
from .io.loading import load_weights
from .io.pruned import PRUNE_META, read_pruned
from .metrics import metric_for
from .models import build_from_config, build_model
from .prune import build_recipe, prune


@dataclass(frozen=True)
class OpenOptions:
    """Everything open_model may be told besides the model itself (the CLI's option of each in brackets)."""

    # a model given by spec
    weights: str | None = None  # its weights file (--weights)
    num_classes: int | None = None  # (--num-classes; respaths: specs default to the dataset's)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # more factory arguments (--model-kwargs)
    # images
    dataset: str | None = None  # (--dataset; a checkpoint's own by default)
    data_dir: str | None = None
    split: str = "test"
    limit: int | None = None  # the first N images, or N text examples (--limit)
    normalize: str | None = None  # "imagenet" | "dataset" (--normalize), or mean and std (--mean, --std)
    mean: str | None = None
    std: str | None = None
    image_size: tuple[int, int] | None = None  # imagefolder: (resize, crop)
    # text
    text: str | None = None  # a UTF-8 text file (--text)
    seq_len: int = 128
    batch_size: int = 8  # text examples per batch
    split_blocks: str = "layer"  # a transformer's blocks: whole "layer"s or "attn_mlp"
    # where
    device: str = "cpu"
    need_data: bool = True  # False: the data is optional (prune measures only when it is given)

    IMAGE_OPTIONS = ("dataset", "normalize", "mean", "std", "image_size")

    def given(self, *names: str) -> list[str]:
        return [n for n in names if getattr(self, n) not in (None, {})]


@dataclass
class Loaded:
    """A model as its source built it, before any data."""

    model: nn.Module
    meta: dict[str, Any]  # what the source says about it: a checkpoint's meta.json, a pruned export's description
    trained_on: Any = None  # the dataset a checkpoint names: a dict with its normalisation, or a name


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


def open_model(model: str, options: OpenOptions | None = None, **changes: Any) -> OpenedModel:
    """Open a model and its data; see the module docstring. changes: OpenOptions fields, applied to
    options. Every bad input is a UserError raised before any work: no file is read twice and nothing
    is written."""
    options = replace(options or OpenOptions(), **changes)
    return source_of(model).open(str(model), options)


def load_model(model: str, weights: str | Path | None = None, num_classes: int | None = None,
               device: str | torch.device = "cpu", **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The model alone, in eval mode on device, and its meta (a checkpoint's meta.json, a pruned
    export's description, else {"model": {"spec", "num_classes", **kwargs}, "weights"}); kwargs go to
    a spec's factory (e.g. img_size=64 for a timm ViT). Nothing is ever downloaded."""
    options = OpenOptions(weights=str(weights) if weights is not None else None, num_classes=num_classes,
                          model_kwargs=kwargs)
    loaded = source_of(model).load(str(model), options)
    return loaded.model.to(device).eval(), loaded.meta


# ---------------------------------------------------------------------------------------------
# The model sources


class ModelSource:
    """One kind of model string. Subclasses say how it is written (`form`, for help and errors),
    whether a string is theirs (detect), how to build the model (load) and what the result files
    record of it (describe); open() adds the data, images or text as `reads` says."""

    name = ""
    form = ""
    reads = "images"  # or "text"
    own_data = False  # True: the model names its dataset, so it is loaded before the data
    holds_weights = False  # True: no weights file is needed for trained weights

    def detect(self, model: str) -> bool:
        raise NotImplementedError

    def load(self, model: str, options: OpenOptions, data: Any = None) -> Loaded:
        """The model (data: the images it will see, so that a factory can fit them; None when not loaded)."""
        raise NotImplementedError

    def describe(self, model: str, options: OpenOptions, loaded: Loaded | None = None) -> dict[str, Any]:
        """What every result file's meta records as its "source" (loaded: the model, where what the
        source records comes from the loading)."""
        raise NotImplementedError

    def open(self, model: str, options: OpenOptions) -> OpenedModel:
        return open_images(self, model, options)


class Directory(ModelSource):
    """A directory that holds its weights and says how to build its model."""

    holds_weights = True

    def refuse_model_options(self, model: str, options: OpenOptions) -> None:
        if options.weights:
            raise UserError(f"{model} is {self.form}, which holds its own weights; drop --weights (it goes with "
                            f"a model spec such as torchvision:resnet50).")
        if options.model_kwargs:
            raise UserError(f"{model} is {self.form}, which builds its own model; drop --model-kwargs (it goes "
                            f"with a model spec).")

    def describe(self, model: str, options: OpenOptions, loaded: Loaded | None = None) -> dict[str, Any]:
        return {"checkpoint": model}


class PrunedExport(Directory):
    name, form, own_data = "pruned", "a directory written by respaths prune", True

    def detect(self, model: str) -> bool:
        return (Path(model) / PRUNE_META).is_file() and not (Path(model) / "config.json").is_file()

    def load(self, model: str, options: OpenOptions, data: Any = None) -> Loaded:
        self.refuse_model_options(model, options)
        pruned, info = load_pruned(model)
        return Loaded(pruned, info)


class HuggingFace(Directory):
    name, form, reads = "hf", "a Hugging Face model directory (save_pretrained)", "text"

    def detect(self, model: str) -> bool:
        return (Path(model) / "config.json").is_file()

    def load(self, model: str, options: OpenOptions, data: Any = None) -> Loaded:
        self.refuse_model_options(model, options)
        hf, tokenizer = load_hf(model)
        return Loaded(hf, {"tokenizer": tokenizer})

    def describe(self, model: str, options: OpenOptions, loaded: Loaded | None = None) -> dict[str, Any]:
        return {"hf": str(Path(model).resolve())}

    def open(self, model: str, options: OpenOptions) -> OpenedModel:
        self.refuse_model_options(model, options)
        if options.given(*OpenOptions.IMAGE_OPTIONS):
            raise UserError("a Hugging Face model directory or GGUF file reads text: give --text FILE, not --dataset "
                            "or image preprocessing options.")
        return open_text(self, model, options)


class GGUF(HuggingFace):
    name, form = "gguf", "a llama.cpp GGUF file"

    def detect(self, model: str) -> bool:  # by its name: opening it says whether it really is one
        return Path(model).suffix.lower() == ".gguf" and not Path(model).is_dir()

    def load(self, model: str, options: OpenOptions, data: Any = None) -> Loaded:
        self.refuse_model_options(model, options)
        net, tokenizer, source = load_gguf(model)
        return Loaded(net, {"tokenizer": tokenizer, "source": source})

    def describe(self, model: str, options: OpenOptions, loaded: Loaded | None = None) -> dict[str, Any]:
        return dict(loaded.meta["source"])  # the file's sha256 and quantisation, read when it was loaded


class Checkpoint(Directory):
    name, form, own_data = "checkpoint", "a respaths checkpoint or run directory", True

    def detect(self, model: str) -> bool:
        return Path(model).is_dir() or Path(model + ".old").is_dir()  # .old: a save that a crash interrupted

    def load(self, model: str, options: OpenOptions, data: Any = None) -> Loaded:
        self.refuse_model_options(model, options)
        net, meta = load_checkpoint(model)
        have = net.config.get("num_classes") if isinstance(getattr(net, "config", None), dict) else None
        if options.num_classes is not None and have is not None and have != options.num_classes:
            raise UserError(f"the checkpoint {model} classifies {have} classes, not {options.num_classes}; drop "
                            f"num_classes or use a checkpoint trained for that dataset.")
        return Loaded(net, meta, meta.get("dataset"))


class Spec(ModelSource):
    """PREFIX:NAME or module.path:factory, with an optional weights file."""

    prefix = ""

    def split(self, model: str) -> tuple[str, str]:
        source, _, name = model.partition(":")
        return source, name

    def detect(self, model: str) -> bool:
        source, name = self.split(model)
        return source == self.prefix and bool(name)

    def build(self, name: str, kwargs: dict[str, Any], model: str) -> nn.Module:
        raise NotImplementedError

    def load(self, model: str, options: OpenOptions, data: Any = None) -> Loaded:
        kwargs = dict(options.model_kwargs)
        if options.num_classes is not None:
            kwargs["num_classes"] = options.num_classes
        built = self.build(self.split(model)[1], self.fit(kwargs, data), model)
        if options.weights is not None:
            load_weights(built, options.weights)
        meta = {"model": {"spec": model, "num_classes": options.num_classes, **options.model_kwargs},
                "weights": str(options.weights) if options.weights is not None else None}
        return Loaded(built, meta)

    def fit(self, kwargs: dict[str, Any], data: Any) -> dict[str, Any]:
        """The factory's arguments, completed from the images it will see where the library wants that."""
        return kwargs

    def describe(self, model: str, options: OpenOptions, loaded: Loaded | None = None) -> dict[str, Any]:
        return {"model": model, "weights": str(options.weights) if options.weights else None,
                **({"model_kwargs": dict(options.model_kwargs)} if options.model_kwargs else {})}


def optional(package: str, spec: str, extra: str):
    try:
        return importlib.import_module(package)
    except ImportError:
        raise UserError(f"{spec} needs {package}, which is not installed; pip install 'respaths[{extra}]'.") from None


def close(name: str, known: list[str]) -> str:
    near = difflib.get_close_matches(name, known, n=3)
    return f" (did you mean {', '.join(near)}?)" if near else ""


class TorchvisionSpec(Spec):
    name = prefix = "torchvision"
    form = "torchvision:NAME"

    def build(self, name: str, kwargs: dict[str, Any], model: str) -> nn.Module:
        tv = optional("torchvision", model, "vision")
        known = tv.models.list_models()
        if name not in known:
            raise UserError(f"torchvision has no model {name!r}{close(name, known)}.")
        return tv.models.get_model(name, weights=None, **kwargs)


class TimmSpec(Spec):
    name = prefix = "timm"
    form = "timm:NAME"

    def build(self, name: str, kwargs: dict[str, Any], model: str) -> nn.Module:
        timm = optional("timm", model, "timm")
        if not timm.is_model(name):
            raise UserError(f"timm has no model {name!r}{close(name, timm.list_models())}.")
        return timm.create_model(name, pretrained=False, **kwargs)


class RespathsSpec(Spec):
    name = prefix = "respaths"
    form = "respaths:NAME"

    def fit(self, kwargs: dict[str, Any], data: Any) -> dict[str, Any]:
        if data is None:
            return kwargs
        return {"num_classes": data.num_classes, "in_channels": data.in_channels, **kwargs}

    def build(self, name: str, kwargs: dict[str, Any], model: str) -> nn.Module:
        try:
            return build_model(name, **kwargs)
        except TypeError as e:  # a keyword build_model does not take (from --model-kwargs)
            word = re.search(r"argument '(\w+)'", str(e))
            raise UserError(f"{model} takes no keyword {word[1] if word else ''!r}; see respaths.models.build_model "
                            f"for the ones it takes ({e}).") from None


class Factory(Spec):
    """module.path:factory: any a:b that no other source claimed, so it is tried last."""

    name, form = "factory", "module.path:factory"

    def detect(self, model: str) -> bool:
        source, name = self.split(model)
        return bool(source) and bool(name)

    def build(self, name: str, kwargs: dict[str, Any], model: str) -> nn.Module:
        source = self.split(model)[0]
        if "" not in sys.path and str(Path.cwd()) not in sys.path:  # `module.path:factory` from where the user is
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(source)
        except ImportError as e:
            raise UserError(f"cannot import {source!r} for the model spec {model!r} ({e}); give one of {forms()}.") from None
        factory = getattr(module, name, None)
        if not callable(factory):
            raise UserError(f"the module {source} has no function {name!r} to build the model from.")
        try:
            built = factory(**kwargs)
        except TypeError as e:
            raise UserError(f"{model}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: {e}.") from None
        if not isinstance(built, nn.Module):
            raise UserError(f"{model} returned a {type(built).__name__}, not a torch.nn.Module.")
        return built


# Tried in this order: directories by the file that marks them, then specs by their prefix, then
# module.path:factory, which takes any a:b.
SOURCES: list[ModelSource] = [PrunedExport(), HuggingFace(), GGUF(), Checkpoint(), TorchvisionSpec(), TimmSpec(),
                              RespathsSpec(), Factory()]


def register(source: ModelSource) -> ModelSource:
    """Add a model source, tried before the others (so a prefix of its own wins over module:factory)."""
    SOURCES.insert(0, source)
    return source


def forms() -> str:
    return ", ".join(s.form for s in SOURCES)


def reads_text(model: str) -> bool:
    """Whether the model string names a model read with text (a Hugging Face directory, a GGUF file)."""
    found = next((s for s in SOURCES if s.detect(str(model))), None)
    return found is not None and found.reads == "text"


def source_of(model: str | None) -> ModelSource:
    """The source that opens this model string: the one place where what a string is gets decided."""
    if not model:
        raise UserError(f"give a model: {forms()}.")
    found = next((s for s in SOURCES if s.detect(str(model))), None)
    if found is None:
        hint = " (a weights file goes in --weights, with a model spec)" if Path(model).is_file() else ""
        raise UserError(f"{str(model)!r} is neither a checkpoint directory nor a model spec{hint}; give one of "
                        f"{forms()}.")
    return found


# ---------------------------------------------------------------------------------------------
# Opening: a model with its images, or with its text


def open_images(source: ModelSource, model: str, o: OpenOptions) -> OpenedModel:
    if o.text is not None:
        raise UserError("--text is for Hugging Face models; an image model takes --dataset.")
    loaded = source.load(model, o) if source.own_data else None
    own = trained_on = loaded.trained_on if loaded and isinstance(loaded.trained_on, dict) else None
    dataset = o.dataset or (own.get("name") if own else loaded.trained_on if loaded else None)
    if own and dataset != own.get("name"):
        own = None  # another dataset than it was trained on: its statistics do not apply
    if dataset is None and o.need_data:
        raise UserError("say which images to use with --dataset (fashion-mnist, cifar10, cifar100, "
                        "imagefolder:PATH or synthetic).")
    if o.image_size is not None and not (isinstance(dataset, str) and dataset.startswith("imagefolder:")):
        # validation refuses it beside --dataset; here the dataset may be a checkpoint's own, or none
        which = ("no images are read" if dataset is None else
                 f"{dataset} has one size" if o.dataset else f"{dataset}, the dataset {model} names, has one size")
        raise UserError(f"--image-size applies to imagefolder:PATH datasets, whose images come in any size; {which}.")
    data, chosen = None, None
    if dataset is not None:
        data = load_dataset(dataset, o.data_dir, split=o.split, limit=o.limit, image_size=o.image_size)
        if len(data) == 0:
            raise UserError(f"{dataset} has no {o.split} images; check --data-dir and --limit.")
        data, chosen = preprocessing(data, o.normalize, o.mean, o.std, own)
    if loaded is None:
        loaded = source.load(model, o, data)
    net = loaded.model.to(o.device).eval()
    example = None
    if data is not None:
        example, _ = next(iter(iterate_batches(data.take(2), 2, torch.device(o.device))))
        first = next((m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        if isinstance(first, nn.Conv2d) and first.in_channels != data.in_channels:
            raise UserError(f"the model takes {first.in_channels}-channel images but {data.name} has "
                            f"{data.in_channels} channel(s); give a dataset the model was made for.")
    with torch.inference_mode():
        v = make_view(net, example)
        if example is not None:
            outputs = v(example).shape[-1]
            if outputs < data.num_classes:
                raise UserError(f"the model has {outputs} outputs but {data.name} has {data.num_classes} classes; "
                                f"give --num-classes or a model trained on this dataset.")
    description = {"source": source.describe(model, o, loaded), "preprocessing": chosen, "metric": "classifier",
                   "fingerprint": weights_fingerprint(net), **({"trained_on": trained_on} if trained_on else {})}
    weights_given = source.holds_weights or bool(o.weights)
    notes = degenerate_warnings(v, example, weights_given=weights_given) if example is not None else []
    return OpenedModel(net, v, data, "classifier", description, warnings=notes)


def open_text(source: ModelSource, model: str, o: OpenOptions) -> OpenedModel:
    """A transformer and its text; o.split_blocks: one block per "layer", or "attn_mlp"."""
    if o.need_data and o.text is None:
        raise UserError("give the text to measure on with --text FILE (a UTF-8 text file).")
    if o.seq_len < 2 or o.batch_size < 1:
        raise UserError("--seq-len must be at least 2 and --batch-size at least 1.")
    loaded = source.load(model, o)
    config = getattr(loaded.model, "config", None)
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if o.text is not None and isinstance(positions, int) and o.seq_len > positions:
        raise UserError(f"--seq-len {o.seq_len} is longer than the {positions} positions {Path(model).name} was made "
                        f"for; give --seq-len {positions} or less.")
    net, tokenizer = loaded.model.to(o.device), loaded.meta.get("tokenizer")
    v = make_view(net, split=o.split_blocks)
    batches = read_text(o.text, v, tokenizer, o.seq_len, o.batch_size, o.limit) if o.text is not None else None
    metric = metric_for(v, batches).name
    description = {"source": {**source.describe(model, o, loaded), "model_class": type(net).__name__},
                   "text": str(Path(o.text).resolve()) if o.text else None, "seq_len": o.seq_len, "metric": metric,
                   "fingerprint": weights_fingerprint(net)}
    return OpenedModel(net, v, batches, metric, description, tokenizer)


# ---------------------------------------------------------------------------------------------
# A pruned image model: its base rebuilt, the same blocks removed, the saved weights loaded


def load_pruned(path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A pruned image model saved by `respaths prune` or respaths.save_pruned, its weights loaded
    strictly: its base rebuilt and the same blocks removed, or where no base is recorded, the
    library's own call ("rebuild"). Returns (model in eval mode, its meta)."""
    path = Path(path)
    info, state = read_pruned(path)
    base = info.get("base")
    if base is None and "rebuild" in info:
        model = build_recipe(info["rebuild"])
    elif base is not None:
        if "respaths_model" in base:
            model = build_from_config(base["respaths_model"]["config"], base["respaths_model"]["name"])
        else:
            model = load_model(base["spec"], num_classes=base.get("num_classes"), **(base.get("model_kwargs") or {}))[0]
        example = torch.zeros(1, *info["input_shape"]) if info.get("input_shape") else None
        model, gone = model.eval(), []
        with torch.no_grad():  # each pruning as it was done, its blocks counted in the model it pruned
            for step in info.get("steps", [info["removed"]]):
                model = prune(model, [j - sum(g < j for g in gone) for j in step], example,
                              renumber=info["format"] != "respaths.pruned/1")
                gone += step
    else:
        raise UserError(f"{path / PRUNE_META} says neither the model before pruning nor how to rebuild it; "
                        f"write it again with respaths prune.")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"the weights in {path} do not fit the model {PRUNE_META} describes "
                        f"({len(missing)} missing, {len(unexpected)} unexpected); write it again with respaths prune.")
    return model.to(device).eval(), info
