"""prune(model, blocks): a self-contained copy of model with the given blocks really removed.

CNNs (any view whose blocks sit in module slots): each removed block's slot holds a Skipped module
computing what the view's deletion computes, post(shortcut(x)); the modules it still uses stay
registered, so parameters(), state_dict(), .to() and .double() see them.
Hugging Face transformers (split="layer"): the layer ModuleList shrinks, config.num_hidden_layers
and per-layer lists (layer_types) follow, and each remaining attention's layer_idx is renumbered so
the KV cache indexes the right slot; save_pretrained / from_pretrained then give the same model.

The `respaths prune` command is respaths.layers.export (which blocks to remove from a result file:
respaths.layers.choose); the files are respaths.io.pruned's, read back by respaths.opening.load_pruned.
"""
from __future__ import annotations

import copy
from functools import partial
from typing import Any, Iterable

import torch
from torch import nn

from .adapters import view as make_view
from .adapters.hf import find_layers
from .core import UserError
from .data.batches import batches
from .engine.trie import evaluate_plans
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


def prune(model: nn.Module, blocks: Iterable[int | str], example_input: Any = None, **view_options: Any) -> nn.Module:
    """A deep copy of model with the given blocks removed (see the module docstring)."""
    if view_options.get("split", "layer") != "layer":
        raise UserError("prune removes whole layers; call it without split='attn_mlp'.")
    twin = copy.deepcopy(model)
    v = make_view(twin, example_input, **view_options)
    gone = resolve(v, twin, [blocks] if isinstance(blocks, (int, str)) else list(blocks))
    if v.adapter == "hf":
        return prune_hf(twin, v, gone)
    for i in gone:
        b = v.blocks[i]
        if not b.residual and (b.in_shape is None or b.in_shape != b.out_shape):
            known = "changes shape" if b.in_shape is not None else "has no shortcut and unknown shapes (give example_input)"
            raise UserError(f"block {i} ({b.name}) is a plain layer that {known}, so it cannot be removed; "
                            f"choose another block.")
    slots = {id(child): (parent, name) for parent in twin.modules() for name, child in parent.named_children()}
    for i in gone:
        b = v.blocks[i]
        if b.module is None or id(b.module) not in slots:
            raise UserError(f"block {i} ({b.name}) is not a module of its own in this model, so it cannot be "
                            f"removed faithfully; remove it in the model's code instead.")
        parent, name = slots[id(b.module)]
        parent._modules[name] = Skipped(b.shortcut, b.post)
    return twin


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

