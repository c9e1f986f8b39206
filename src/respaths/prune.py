"""prune(model, blocks): a self-contained copy of model with the given blocks really removed.

CNNs and ViTs (any view whose blocks sit in module slots): a removed block whose deletion is the
identity (an identity shortcut, and a post that is the identity or a ReLU of an already rectified
input) leaves its Sequential/ModuleList, which is renumbered, so that the pruned model is the
library's own class with fewer blocks (timm's ViT: len(model.blocks) shrinks). Any other removed
block (one that downsamples: its projection still computes) becomes a Skipped module computing what
the view's deletion computes, post(shortcut(x)); the modules it still uses stay registered, so
parameters(), state_dict(), .to() and .double() see them.
Hugging Face transformers (split="layer"): the layer ModuleList shrinks, config.num_hidden_layers
and per-layer lists (layer_types) follow, and each remaining attention's layer_idx is renumbered so
the KV cache indexes the right slot; save_pretrained / from_pretrained then give the same model.

The pruned model carries `respaths_pruned` (what was removed, of how many; the base model's blocks'
names), which respaths.save_pruned writes beside the weights. `rebuild_recipe` says how the model's
own library builds the pruned architecture (timm.create_model(..., depth=N), torchvision's ResNet with
shorter layers).

The `respaths prune` command is respaths.layers.export (which blocks to remove from a result file:
respaths.layers.choose); the files are respaths.io.pruned's, read back by respaths.opening.load_pruned.
"""
from __future__ import annotations

import copy
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from .adapters import view as make_view
from .adapters.declared import is_identity
from .adapters.hf import find_layers
from .core import UserError
from .data.batches import batches
from .engine.trie import evaluate_plans
from .io.pruned import save_weights, write_pruned
from .models import Net
from .metrics import classify, inputs_of, mean_pool, model_device, to_device, valid_tokens


def modules_used(fn: Any) -> list[nn.Module]:
    """The nn.Modules a shortcut or post callable computes with, so that they can be registered."""
    if isinstance(fn, nn.Module):
        return [fn]
    found: list[nn.Module] = []
    if isinstance(fn, partial):
        found += [m for a in (*fn.args, *fn.keywords.values()) for m in modules_used(a) if isinstance(a, nn.Module)]
        found += modules_used(fn.func) if isinstance(fn.func, nn.Module) else []
    owner = getattr(fn, "__self__", None)  # a bound method of a module
    if isinstance(owner, nn.Module):
        found.append(owner)
    for cell in getattr(fn, "__closure__", None) or ():
        if isinstance(cell.cell_contents, nn.Module):
            found.append(cell.cell_contents)
    return found


class Skipped(nn.Module):
    """Stands in for a removed block: post(shortcut(x)), or x for a plain layer of unchanged shape.

    Extra arguments (a transformer layer's attention mask, ...) are accepted and unused, as a
    skipped block ignores them."""

    def __init__(self, shortcut: Any, post: Any):
        super().__init__()
        self.fns = (shortcut, post)  # a tuple, so that nn.Module does not register them a second time
        used = [m for fn in (shortcut, post) if fn is not None for m in modules_used(fn)]
        self.kept = nn.ModuleList(list({id(m): m for m in used}.values()))  # registered for .to() etc.

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        shortcut, post = self.fns
        return x if shortcut is None else post(shortcut(x))


class AfterSkipped:
    """A pruned model seen again (respaths.view): a Skipped module is no block of its own but runs after
    what precedes it, a kept block's post or the stem; `own` is that post (or stem) alone, which surgery
    on the block uses, as the Skipped module stays in its own slot."""

    def __init__(self, own: Any, skipped: Skipped):
        self.own, self.skipped = own, skipped

    def __call__(self, x: Any) -> Any:
        return self.skipped(self.own(x))


def own_post(block: Any) -> Any:
    """The block's own post, without a Skipped module that follows it in a pruned model."""
    return block.post.own if isinstance(block.post, AfterSkipped) else block.post


def fold_skipped(stem: Any, blocks: list[Any]) -> tuple[Any, list[Any]]:
    """(stem, blocks) of a view whose block list holds Skipped modules (a pruned model's removed
    downsampling blocks), each folded into the post of the block before it, or into the stem: so the
    view's blocks are the kept ones, numbered as the first model's minus the removed."""
    kept: list[Any] = []
    for b in blocks:
        if not isinstance(b, Skipped):
            kept.append(b)
        elif kept:
            kept[-1].post = AfterSkipped(kept[-1].post, b)
        else:
            stem = AfterSkipped(stem, b)
    return stem, kept


def resolve(view: Any, model: nn.Module, blocks: Iterable[int | str]) -> list[int]:
    """Block indices from indices or names (a view block's name or the block module's own name)."""
    by_name = {b.name: b.index for b in view.blocks}
    module_names = {id(m): n for n, m in model.named_modules()}
    for b in view.blocks:
        if b.module is not None and id(b.module) in module_names:
            by_name.setdefault(module_names[id(b.module)], b.index)
    n, out = len(view), []
    for spec in blocks:
        if isinstance(spec, str) and spec.strip().lstrip("-").isdigit():
            spec = int(spec)
        if isinstance(spec, int):
            if not 0 <= spec < n:
                raise UserError(f"block {spec} is out of range: this model has {n} blocks (0..{n - 1}).")
            out.append(spec)
        elif spec in by_name:
            out.append(by_name[spec])
        else:
            raise UserError(f"there is no block named {spec!r}; give block indices 0..{n - 1} or names such "
                            f"as {view.blocks[0].name!r}.")
    gone = sorted(set(out))
    if not gone:
        raise UserError("no blocks were given to remove; give at least one block index or name.")
    if len(gone) == n:
        raise UserError(f"cannot remove all {n} blocks; keep at least one.")
    return gone


def prune(model: nn.Module, blocks: Iterable[int | str], example_input: Any = None, *, renumber: bool = True,
          **view_options: Any) -> nn.Module:
    """A deep copy of model with the given blocks removed (see the module docstring). renumber=False
    keeps every slot (a Skipped module in each removed block's place), as respaths 0.2's first
    exports were written."""
    if view_options.get("split", "layer") != "layer":
        raise UserError("prune removes whole layers; call it without split='attn_mlp'.")
    twin = copy.deepcopy(model)
    v = make_view(twin, example_input, **view_options)
    gone = resolve(v, twin, [blocks] if isinstance(blocks, (int, str)) else list(blocks))
    before = getattr(model, "respaths_pruned", None)  # pruned before: count in the first model's blocks
    names = before["names_before"] if before else [b.name for b in v.blocks]
    kept_before = [j for j in range(len(names)) if j not in set(before["removed"])] if before else list(range(len(v)))
    removed = sorted(set(before["removed"] if before else []) | {kept_before[i] for i in gone})
    # each pruning's removals, in the first model's blocks: a pruned model pruned again is rebuilt by the
    # same steps (respaths.load_pruned), as a step may leave a Skipped module where one pruning would not
    steps = [*(before.get("steps", [before["removed"]]) if before else []), [kept_before[i] for i in gone]]
    if v.adapter == "hf":
        twin = prune_hf(twin, v, gone)
    else:
        remove_cnn_blocks(twin, v, gone, renumber)
    twin.respaths_pruned = {"removed": removed, "steps": steps, "names_before": names,
                            "input_shape": list(example_input.shape[1:]) if torch.is_tensor(example_input) else
                            (before or {}).get("input_shape")}
    return twin


def remove_cnn_blocks(twin: nn.Module, v: Any, gone: list[int], renumber: bool) -> None:
    for i in gone:
        b = v.blocks[i]
        if not b.residual and (b.in_shape is None or b.in_shape != b.out_shape):
            known = "changes shape" if b.in_shape is not None else "has no shortcut and unknown shapes (give example_input)"
            raise UserError(f"block {i} ({b.name}) is a plain layer that {known}, so it cannot be removed; "
                            f"choose another block.")
    slots = {id(child): (parent, name) for parent in twin.modules() for name, child in parent.named_children()}
    emptied: dict[int, nn.Module] = {}
    for i in gone:
        b = v.blocks[i]
        if b.module is None or id(b.module) not in slots:
            raise UserError(f"block {i} ({b.name}) is not a module of its own in this model, so it cannot be "
                            f"removed faithfully; remove it in the model's code instead.")
        parent, name = slots[id(b.module)]
        if renumber and isinstance(parent, (nn.Sequential, nn.ModuleList)) and removal_is_identity(v, i):
            del parent._modules[name]
            emptied[id(parent)] = parent
        else:
            parent._modules[name] = Skipped(b.shortcut, own_post(b))
    for parent in emptied.values():  # renumbered 0..n-1, as the library numbers a list it built
        parent._modules = type(parent._modules)((str(j), m) for j, m in enumerate(parent._modules.values()))


def is_relu(fn: Any) -> bool:
    return fn in (torch.relu, nn.functional.relu) or type(fn) is nn.ReLU


def removal_is_identity(v: Any, i: int) -> bool:
    """Whether deleting block i, post(shortcut(x)), is x for every input it can get: an identity
    shortcut (or a plain layer), and a post that is the identity or a ReLU whose input another ReLU
    made (the block before ends in one, whether it stays or goes)."""
    b = v.blocks[i]
    if not b.residual:  # a plain layer of unchanged shape: deleting it leaves x
        return True
    if not is_identity(b.shortcut):
        return False
    if is_identity(own_post(b)):
        return True
    # a Skipped module that follows the block before (a pruned model's) makes its output: not a ReLU's here
    return is_relu(own_post(b)) and i > 0 and is_relu(v.blocks[i - 1].post)


def prune_hf(model: nn.Module, v: Any, gone: list[int]) -> nn.Module:
    path, layers = find_layers(model.base_model)
    keep = [j for j in range(len(layers)) if j not in set(gone)]
    parent_path, _, attr = path.rpartition(".")
    parent = model.base_model.get_submodule(parent_path) if parent_path else model.base_model
    setattr(parent, attr, nn.ModuleList([layers[j] for j in keep]))
    for new_idx, layer in enumerate(getattr(parent, attr)):
        for m in layer.modules():  # the attention's layer_idx picks its slot of the KV cache
            if hasattr(m, "layer_idx"):
                m.layer_idx = new_idx
    config = model.config
    old_n = config.num_hidden_layers
    config.num_hidden_layers = len(keep)  # GPT-2's attribute_map makes this n_layer
    for key, value in list(vars(config).items()):  # per-layer lists: layer_types and the like
        if isinstance(value, (list, tuple)) and len(value) == old_n and key != "architectures":
            setattr(config, key, type(value)(value[j] for j in keep))
    if getattr(model, "generation_config", None) is not None and hasattr(model.generation_config, "num_hidden_layers"):
        model.generation_config.num_hidden_layers = len(keep)
    return model


# ---------------------------------------------------------------------------------------------
# How the model's own library builds the pruned architecture, and the pruned model on disk


def rebuild_recipe(model: nn.Module, kwargs: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The call of the model's own library that builds this (pruned) architecture, with random
    weights that the saved state dict then replaces: {"library", "call", "args", "kwargs", "python"}.
    None where no plain call does: a Skipped block remains, or the model is no timm ViT/ResNet or
    torchvision ResNet. kwargs: what the model was created with (a spec's --model-kwargs)."""
    if any(isinstance(m, Skipped) for m in model.modules()):
        return None
    kw = dict(kwargs or {})
    if sys.modules.get("timm") is not None:
        from timm.models.resnet import ResNet as TimmResNet
        from timm.models.vision_transformer import VisionTransformer
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        if arch and type(model) in (VisionTransformer, TimmResNet):
            kw["num_classes"] = model.num_classes
            if type(model) is VisionTransformer:
                kw["depth"] = len(model.blocks)
                kw.setdefault("img_size", list(model.patch_embed.img_size))
            else:
                kw["layers"] = [len(getattr(model, f"layer{s}")) for s in range(1, 5)]
            return {"library": "timm", "call": "timm.create_model", "args": [arch], "kwargs": kw,
                    "python": f"timm.create_model({arch!r}, pretrained=False, {arguments(kw)})"}
    if sys.modules.get("torchvision") is not None:
        from torchvision.models import resnet
        if type(model) is resnet.ResNet:
            block = type(model.layer1[0]).__name__
            layers = [len(getattr(model, f"layer{s}")) for s in range(1, 5)]
            kw = {"num_classes": model.fc.out_features, "groups": model.groups, "width_per_group": model.base_width}
            return {"library": "torchvision", "call": "torchvision.models.resnet.ResNet", "args": [block, layers],
                    "kwargs": kw, "python": f"torchvision.models.resnet.ResNet(torchvision.models.resnet.{block}, "
                                            f"{layers}, {arguments(kw)})"}
    return None


def arguments(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def build_recipe(recipe: dict[str, Any]) -> nn.Module:
    """The model rebuild_recipe describes, freshly initialised, in eval mode."""
    if recipe["library"] == "timm":
        import timm
        return timm.create_model(recipe["args"][0], pretrained=False, **recipe["kwargs"]).eval()
    if recipe["library"] == "torchvision":
        from torchvision.models import resnet
        block, layers = recipe["args"]
        return resnet.ResNet(getattr(resnet, block), layers, **recipe["kwargs"]).eval()
    raise UserError(f"a rebuild recipe of the library {recipe['library']!r} is not one respaths writes; "
                    f"write the model again with respaths prune.")


def recipe_rebuilds(recipe: dict[str, Any], model: nn.Module, example_input: Any = None) -> bool:
    """Whether the recipe's model takes model's weights strictly and, given an example, computes the same."""
    try:
        twin = build_recipe(recipe)
        twin.load_state_dict(model.state_dict(), strict=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    if example_input is None:
        return True
    with torch.no_grad():
        return torch.allclose(twin(example_input), model.eval()(example_input), rtol=1e-5, atol=1e-6)


# files the export of a Hugging Face model writes itself or must not copy from its source folder: the
# original weights (any format) would be the unpruned model's
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".ot",
                   ".tflite", ".index.json")


def copy_extras(source: Path, out: Path) -> list[str]:
    """Copy into out what the source folder holds that out does not (sentence-transformers' modules.json,
    1_Pooling/, ...), but no weights and no hidden files; returns the copied paths."""
    copied = []
    for f in sorted(source.rglob("*")):
        rel = f.relative_to(source)
        if not f.is_file() or any(part.startswith(".") for part in rel.parts) or f.name.endswith(WEIGHT_SUFFIXES):
            continue
        if not (out / rel).exists():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out / rel)
            copied.append(str(rel))
    return copied


def save_pruned(model: nn.Module, out: str | Path, *, tokenizer: Any = None, copy_from: str | Path | None = None,
                base: dict[str, Any] | None = None, model_kwargs: dict[str, Any] | None = None,
                example_input: Any = None, info: dict[str, Any] | None = None) -> Path:
    """Write a model that respaths.prune returned into the directory out (replaced whole, or left as it
    was on failure), and return out. A Hugging Face model: save_pretrained (and the tokenizer), plus
    what its source folder copy_from held that this does not rewrite (sentence-transformers' files);
    another: model.safetensors. Both with respaths_prune.json: what was removed and how to rebuild the
    model ("rebuild": the library's own call, checked to take the weights; "base": the model before
    pruning, where known: a respaths model's config, or the spec the command line was given).
    info: more for respaths_prune.json (the command line's reason and metrics)."""
    record = getattr(model, "respaths_pruned", None)
    if record is None:
        raise UserError(f"this {type(model).__name__} was not returned by respaths.prune; prune it first, "
                        f"e.g. respaths.save_pruned(respaths.prune(model, [3]), DIR).")
    names = record["names_before"]
    meta: dict[str, Any] = {"removed": record["removed"], "removed_names": [names[i] for i in record["removed"]],
                            "blocks_before": len(names), "blocks_after": len(names) - len(record["removed"])}
    if len(record.get("steps", ())) > 1:  # pruned again: load_pruned repeats the steps
        meta["steps"] = record["steps"]
    meta.update(info or {})
    transformers = sys.modules.get("transformers")
    if transformers is not None and isinstance(model, transformers.PreTrainedModel):
        def write_model(tmp: Path) -> None:
            model.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            if copy_from is not None:
                meta["copied_from_source"] = copy_extras(Path(copy_from), tmp)  # before write_pruned writes meta
        return write_pruned(out, meta, write_model)
    meta["input_shape"] = record.get("input_shape")
    if base is None and isinstance(model, Net):
        base = {"respaths_model": {"name": model.config.get("name"), "config": dict(model.config)}}
    recipe = rebuild_recipe(model, model_kwargs)
    if recipe is not None and not recipe_rebuilds(recipe, model, example_input):
        recipe = None
    if base is None and recipe is None:
        raise UserError(f"respaths cannot record how to rebuild {type(model).__name__}: it is no respaths model, "
                        f"and its library has no call that builds it as pruned; prune it with respaths prune "
                        f"--model SPEC, which records the spec.")
    if base is not None:
        meta["base"] = base
    if recipe is not None:
        meta["rebuild"] = recipe
    return write_pruned(out, meta, save_weights(model))


# ---------------------------------------------------------------------------------------------
# The metric before and after, on the data the user gives

@torch.no_grad()
def classifier_error(model: nn.Module, data: Any, batch_size: int = 256, device: str = "cpu") -> dict[str, float]:
    """Top-1 error and mean cross-entropy of model(x), a plain forward, over a respaths Dataset."""
    wrong, loss, n = 0, 0.0, 0
    model.eval()
    for x, y in batches(data, batch_size, device):
        ok, batch_loss = classify(model(x), y)
        wrong += int((~ok).sum())
        loss += float(batch_loss)
        n += len(y)
    return {"n": n, "error": wrong / n, "loss": loss / n}


def metric_of(opened: Any, model: nn.Module, plan: Any = None, text_metric: Any = None) -> dict[str, float]:
    """The opened data's metric for a whole model (plan None) or for the original view's plan."""
    if text_metric is None:
        if plan is None:
            return classifier_error(model, opened.data, device=str(next(model.parameters()).device))
        r = evaluate_plans(opened.view, opened.data, [plan])[0]
        return {k: r[k] for k in ("n", "error", "loss")}  # as classifier_error gives them
    if plan is None and model is not opened.model and text_metric.name == "cosine":
        return cosine_between(opened.view, make_view(model), opened.data)  # against the original's embeddings
    return text_metric(opened.view if plan is not None else make_view(model), opened.data, plan).numbers


@torch.inference_mode()
def cosine_between(reference: Any, other: Any, batches: list) -> dict[str, float]:
    """Cosine similarity of other's mean-pooled outputs to reference's, averaged over examples (the
    embedding-cosine metric of a second model, such as a pruned one, against the original)."""
    total, n = 0.0, 0
    for b in batches:
        b = to_device(b, model_device(reference))
        ref, out = reference(inputs_of(b)), other(inputs_of(b))
        cos = torch.nn.functional.cosine_similarity(mean_pool(out, valid_tokens(b, out)),
                                                    mean_pool(ref, valid_tokens(b, ref)), dim=-1)
        total, n = total + float(cos.double().sum()), n + len(cos)
    return {"n": n, "cos": total / n}

