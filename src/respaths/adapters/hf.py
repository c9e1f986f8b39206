"""Adapter for Hugging Face transformers: BERT-style encoders, GPT-2 and Llama-style decoders, ViT.

Stem. The model's own forward runs up to its first layer and is stopped there by a hook that
records what that layer receives: the embeddings (the activation entering block 0) and the keyword
arguments every layer gets (attention mask built from the padding mask, position ids, rotary
cos/sin; no KV cache). So masks and positions are made by the model's code, never re-derived here.
The arguments are kept in the view's `context` until the next stem call, and the blocks read them:
run the stem on a batch before running blocks on that batch's activations (the blocks check that
batch size and sequence length agree). `view.stem_with_context(inputs)` instead returns them with
the activation, keeping nothing, and `view.run_from(i, x, context)` runs the blocks on them: the
stateless way to hold activations of several batches at once.

Blocks. split="layer" (default): one block per layer, block(x) = layer(x), the model's own layer.
  Pre-LN (GPT-2, Llama, ViT): y = h + mlp(ln2(h)), h = x + attn(ln1(x)); as a triple,
  shortcut = post = identity and branch(x) = layer(x) - x (exact up to one rounding, for path
  analyses); deleting it leaves x, the layer skipped.
  Post-LN (BERT): y = LN2(h + ffn(h)), h = LN1(x + attn(x)). The LayerNorms sit on the main path,
  so a whole layer is no single triple; respaths takes the same reading, y = x + (layer(x) - x),
  so that deleting a layer skips it, as the layer-pruning papers do (ShortGPT, Gromov et al.).
split="attn_mlp": attention and MLP are two blocks, each exactly post(x + branch(x)): post is the
  identity in pre-LN models and the LayerNorm after the sum in BERT (Veit's post-activation case:
  deleting a BERT half-block leaves LN(x)).

Head. The rest of the model's forward: the final norm (GPT-2 ln_f, Llama norm, ViT layernorm),
then the task head: lm_head (causal LM), pooler + classifier (BertForSequenceClassification),
cls (BertForMaskedLM), classifier on the class token (ViTForImageClassification). A base model's
view returns its last hidden state.

Inputs: a dict or BatchEncoding (input_ids, attention_mask, token_type_ids, position_ids,
pixel_values), a LongTensor of input ids, or a float tensor of pixel values.
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
import pickle
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from safetensors import SafetensorError
from torch import Tensor, nn

from ..core import Block, ResidualView, StemContext, UserError, identity

# Layer classes whose attention and MLP halves respaths computes itself (split="attn_mlp"), by
# family; exact class names, as a subclass or a look-alike may compute something else.
SPLIT_CLASSES = {
    "bert": {"BertLayer", "RobertaLayer"},
    "gpt2": {"GPT2Block"},
    "llama": {"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer"},
    "vit": {"ViTLayer"},
}
# Where a base model keeps its layers (ViT moved from encoder.layer to layers in transformers 5),
# and each family's final norm (None: no final norm).
LAYER_PATHS = ("encoder.layer", "h", "layers")
FINAL_NORM = {"bert": None, "gpt2": "ln_f", "llama": "norm", "vit": "layernorm"}


class StemStop(Exception):
    """Raised by the hook on the first layer once it has seen its inputs."""


@dataclass(frozen=True)
class LayerArgs:
    """What one stem call gave the first layer besides the activation: the keyword arguments every
    layer gets, the batch's (size, length), and the model inputs they were made from."""

    kwargs: dict[str, Any]
    shape: tuple[int, int]
    inputs: dict[str, Any]


# The layer arguments bound by run_from for its call, per Context: a context variable, so that
# threads and nested calls each see their own.
BOUND: contextvars.ContextVar[dict["Context", LayerArgs]] = contextvars.ContextVar("respaths_hf_bound", default={})


class Context:
    """The layer arguments the blocks read: those bound by run_from for its call, else the last stem
    call's."""

    def __init__(self) -> None:
        self.last: LayerArgs | None = None

    def current(self) -> LayerArgs | None:
        return BOUND.get().get(self, self.last)

    @property
    def kwargs(self) -> dict[str, Any]:
        args = self.current()
        return args.kwargs if args is not None else {}

    @property
    def shape(self) -> tuple[int, int] | None:
        args = self.current()
        return args.shape if args is not None else None

    @property
    def inputs(self) -> dict[str, Any]:
        args = self.current()
        return args.inputs if args is not None else {}

    @contextlib.contextmanager
    def binding(self, args: LayerArgs) -> Iterator[None]:
        token = BOUND.set({**BOUND.get(), self: args})
        try:
            yield
        finally:
            BOUND.reset(token)

    def check(self, x: Tensor) -> dict[str, Any]:
        args = self.current()
        if args is None:
            raise RuntimeError("a Hugging Face view's blocks ran before its stem: call view.stem(inputs) first.")
        if tuple(x.shape[:2]) != args.shape:
            raise RuntimeError(f"this activation has batch and length {tuple(x.shape[:2])}, but the last stem "
                               f"call was for {args.shape}: run the stem on this batch again first.")
        return args.kwargs


class HFView(ResidualView):
    """A ResidualView of a transformers model, with what the layer-importance metrics need to know."""

    family: str  # bert | gpt2 | llama | vit
    task: str  # causal-lm | masked-lm | classifier | hidden
    context: Context
    config: Any
    enter: Any  # inputs -> (activation, LayerArgs), keeping nothing

    def stem_with_context(self, inputs: Any) -> tuple[Tensor, StemContext]:
        x, args = self.enter(inputs)
        return x, StemContext(args.shape, args)

    @contextlib.contextmanager
    def bound(self, context: StemContext) -> Iterator[None]:
        if not isinstance(context.state, LayerArgs):
            raise UserError("this context holds no Hugging Face layer arguments; pass the context that this view's "
                            "stem_with_context returned.")
        with self.context.binding(context.state):
            yield


def family_of(base: nn.Module) -> str | None:
    path, layers = find_layers(base)
    if layers is None or len(layers) == 0:
        return None
    layer = layers[0]
    has = lambda *names: all(hasattr(layer, n) for n in names)  # noqa: E731
    if has("attention", "intermediate", "output") and hasattr(layer.attention, "self"):
        return "bert"
    if has("ln_1", "attn", "ln_2", "mlp"):
        return "gpt2"
    if has("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"):
        return "llama"
    if has("layernorm_before", "attention", "layernorm_after"):
        return "vit"
    return None


def find_layers(base: nn.Module) -> tuple[str, nn.ModuleList | None]:
    for path in LAYER_PATHS:
        try:
            m = base.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(m, nn.ModuleList):
            return path, m
    return "", None


# ---------------------------------------------------------------------------------------------
# Stem: the model's own forward, stopped at the first layer


def as_inputs(inputs: Any) -> dict[str, Any]:
    if isinstance(inputs, Mapping):
        d = {k: v for k, v in inputs.items() if k not in ("labels", "label")}
    elif isinstance(inputs, Tensor):
        d = {"pixel_values": inputs} if inputs.is_floating_point() else {"input_ids": inputs}
    else:
        raise UserError(f"a Hugging Face view takes a dict of tensors (input_ids, attention_mask, ...) or a "
                        f"tensor, not {type(inputs).__name__}.")
    return d


def stem(base: nn.Module, layers: nn.ModuleList, ctx: Context, inputs: Any) -> Tensor:
    """The activation entering layer 0; its layer arguments stay in ctx for the blocks."""
    x, ctx.last = enter(base, layers, inputs)
    return x


def enter(base: nn.Module, layers: nn.ModuleList, inputs: Any) -> tuple[Tensor, LayerArgs]:
    """The activation entering layer 0 and the layer arguments of this input, keeping nothing."""
    seen: dict[str, Any] = {}

    def hook(module, args, kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        raise StemStop

    d = as_inputs(inputs)
    if "use_cache" in inspect.signature(base.forward).parameters:
        d["use_cache"] = False
    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        base(**d)
    except StemStop:
        pass
    finally:
        handle.remove()
    if "args" not in seen:
        raise RuntimeError(f"{type(base).__name__}.forward returned without calling its first layer.")
    # Name every argument, so that the halves of a layer can pick the attention mask etc. by name.
    bound = inspect.signature(layers[0].forward).bind(*seen["args"], **seen["kwargs"])
    named: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        named.update(value) if kind is inspect.Parameter.VAR_KEYWORD else named.__setitem__(name, value)
    first = next(iter(bound.signature.parameters))  # hidden_states
    x = named.pop(first)
    return x, LayerArgs(named, tuple(x.shape[:2]), d)


# ---------------------------------------------------------------------------------------------
# Blocks


def first(out: Any) -> Tensor:
    """Older transformers return (hidden_states, ...) from layers and attention; newer a tensor."""
    return out[0] if isinstance(out, tuple) else out


def whole_layer(layer: nn.Module, ctx: Context, x: Tensor) -> Tensor:
    return first(layer(x, **ctx.check(x)))


def layer_residual(layer: nn.Module, ctx: Context, x: Tensor) -> Tensor:
    return whole_layer(layer, ctx, x) - x


# The halves of one layer: branch(x) as the layer computes it before its residual sum.

def gpt2_attn(layer: nn.Module, ctx: Context, x: Tensor) -> Tensor:
    kw = ctx.check(x)
    return first(layer.attn(layer.ln_1(x), attention_mask=kw.get("attention_mask"), position_ids=kw.get("position_ids")))


def gpt2_mlp(layer: nn.Module, ctx: Context, x: Tensor) -> Tensor:
    return layer.mlp(layer.ln_2(x))


def llama_attn(layer: nn.Module, ctx: Context, x: Tensor) -> Tensor:
    kw = ctx.check(x)
    return first(layer.self_attn(hidden_states=layer.input_layernorm(x), attention_mask=kw.get("attention_mask"),
                                 position_ids=kw.get("position_ids"), position_embeddings=kw.get("position_embeddings")))


def llama_mlp(layer: nn.Module, ctx: Context, x: Tensor) -> Tensor:
    return layer.mlp(layer.post_attention_layernorm(x))


def bert_attn(layer: nn.Module, ctx: Context, x: Tensor) -> Tensor:
    kw = ctx.check(x)
    out = layer.attention.output
    return out.dropout(out.dense(first(layer.attention.self(x, attention_mask=kw.get("attention_mask")))))


def bert_mlp(layer: nn.Module, ctx: Context, x: Tensor) -> Tensor:
    return layer.output.dropout(layer.output.dense(layer.intermediate(x)))


def vit_attn(layer: nn.Module, ctx: Context, x: Tensor) -> Tensor:
    kw = ctx.check(x)
    return layer.dropout(first(layer.attention(layer.layernorm_before(x), kw.get("attention_mask"))))


def vit_mlp(layer: nn.Module, ctx: Context, x: Tensor) -> Tensor:
    return layer.dropout(layer.mlp(layer.layernorm_after(x)))


HALVES = {"gpt2": (gpt2_attn, gpt2_mlp), "llama": (llama_attn, llama_mlp),
          "bert": (bert_attn, bert_mlp), "vit": (vit_attn, vit_mlp)}


def half_posts(family: str, layer: nn.Module) -> tuple[nn.Module, nn.Module] | tuple[Any, Any]:
    if family == "bert":  # post-LN: the LayerNorm after each residual sum
        return layer.attention.output.LayerNorm, layer.output.LayerNorm
    return identity, identity


def check_splittable(family: str, layer: nn.Module, name: str, config: Any) -> None:
    kind = type(layer).__name__
    if kind not in SPLIT_CLASSES[family]:
        raise UserError(f"{name} is a {kind}, which respaths cannot split into attention and MLP exactly; "
                        f"use split='layer'.")
    if getattr(config, "add_cross_attention", False):
        raise UserError(f"{name} has cross-attention, which respaths does not split; use split='layer'.")
    if family == "bert" and getattr(config, "chunk_size_feed_forward", 0):
        raise UserError("this BERT computes its feed-forward in chunks, which respaths does not split; "
                        "use split='layer'.")
    if family == "vit" and not hasattr(layer, "mlp"):
        raise UserError(f"{name} is a ViTLayer of an older transformers, with the residual sum inside its "
                        f"output module; use split='layer'.")


# ---------------------------------------------------------------------------------------------
# Head


def final_norm(base: nn.Module, family: str) -> Any:
    name = FINAL_NORM[family]
    return getattr(base, name) if name else identity


def causal_lm_head(model: nn.Module, norm: Any, x: Tensor) -> Tensor:
    return model.lm_head(norm(x))


def bert_classifier_head(model: nn.Module, base: nn.Module, x: Tensor) -> Tensor:
    return model.classifier(model.dropout(base.pooler(x)))


def masked_lm_head(model: nn.Module, x: Tensor) -> Tensor:
    return model.cls(x)


def vit_classifier_head(model: nn.Module, norm: Any, x: Tensor) -> Tensor:
    return model.classifier(norm(x)[:, 0, :])


def head_for(model: nn.Module, base: nn.Module, family: str) -> tuple[Any, str]:
    """(head callable, task) for the model's class; a base model returns its last hidden state."""
    norm = final_norm(base, family)
    cls = type(model).__name__
    if model is base:
        return norm, "hidden"
    if family in ("gpt2", "llama") and (cls.endswith("ForCausalLM") or cls == "GPT2LMHeadModel"):
        return partial(causal_lm_head, model, norm), "causal-lm"
    if family == "bert" and cls in ("BertForSequenceClassification",) and getattr(base, "pooler", None) is not None:
        return partial(bert_classifier_head, model, base), "classifier"
    if family == "bert" and cls == "BertForMaskedLM":
        return partial(masked_lm_head, model), "masked-lm"
    if family == "vit" and cls == "ViTForImageClassification":
        return partial(vit_classifier_head, model, norm), "classifier"
    raise UserError(f"respaths knows the base model of a {cls} but not its head; view its base model "
                    f"(model.base_model) instead, or declare the model (docs/study-your-own-model.md, 'Bring your own model').")


# ---------------------------------------------------------------------------------------------


def adapt(model: nn.Module, split: str = "layer", example_input: Any = None, **_) -> HFView | None:
    if sys.modules.get("transformers") is None:  # a transformers model cannot exist without the import
        return None
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return None
    base = model.base_model
    family = family_of(base)
    if family is None:
        raise UserError(f"{type(model).__name__} is a transformers model whose layers respaths does not know "
                        f"(it knows BERT-style encoders, GPT-2 and Llama-style decoders, ViT); declare it "
                        f"(docs/study-your-own-model.md, 'Bring your own model').")
    if split not in ("layer", "attn_mlp"):
        raise UserError(f"split={split!r} is not a way to cut a transformer into blocks; use 'layer' (one "
                        f"block per layer) or 'attn_mlp' (attention and MLP as two blocks).")
    config = model.config
    if len(set(getattr(config, "layer_types", None) or ["one"])) > 1:
        raise UserError(f"{type(model).__name__} gives its layers different attention masks (layer_types "
                        f"{sorted(set(config.layer_types))}), which respaths' transformer view does not handle.")
    path, layers = find_layers(base)
    ctx = Context()
    blocks: list[Block] = []
    for j, layer in enumerate(layers):
        name = f"{path}.{j}"
        if split == "layer":
            blocks.append(Block(branch=partial(layer_residual, layer, ctx), forward=partial(whole_layer, layer, ctx),
                                name=name, module=layer))
            continue
        check_splittable(family, layer, name, config)
        (attn, mlp), (post_a, post_m) = HALVES[family], half_posts(family, layer)
        blocks.append(Block(branch=partial(attn, layer, ctx), post=post_a, name=f"{name}.attn", module=layer))
        blocks.append(Block(branch=partial(mlp, layer, ctx), post=post_m, name=f"{name}.mlp", module=layer))
    head, task = head_for(model, base, family)
    v = HFView(partial(stem, base, layers, ctx), blocks, head, model=model,
               name=getattr(config, "_name_or_path", "") or type(model).__name__, adapter="hf")
    v.family, v.task, v.context, v.config = family, task, ctx, config
    v.enter = partial(enter, base, layers)
    return v


def _first_line(e: Exception, limit: int = 160) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= limit else text[:limit] + " ..."


def load(path: str, attn_implementation: str = "eager") -> tuple[nn.Module, Any]:
    """A model saved with save_pretrained (a directory with config.json), and its tokenizer if saved
    beside it (else None); never from the network. Eval mode, float32."""
    import os

    if not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"{path} is not a Hugging Face model directory (no config.json); give a directory "
                        f"written by save_pretrained.")
    try:
        import transformers
        from transformers import AutoConfig, AutoTokenizer
    except ImportError:
        raise UserError(f"reading the Hugging Face model in {path} needs transformers; install it with "
                        f"`pip install respaths[hf]`.") from None
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:  # an unknown model_type, a damaged config.json
        raise UserError(f"transformers cannot read {path}/config.json ({_first_line(e)}); give a directory written by "
                        f"save_pretrained with this transformers ({transformers.__version__}).") from None
    arch = (getattr(config, "architectures", None) or ["AutoModel"])[0]
    cls = getattr(transformers, arch, None) or transformers.AutoModel
    import sys
    from transformers.utils import logging as hf_logging
    if not sys.stderr.isatty():  # a log or a pipe: its "Loading weights" bar would bury an error line
        hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():  # torch's note on a .bin's pickle protocol, before its refusal or not
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            model = cls.from_pretrained(path, local_files_only=True, attn_implementation=attn_implementation)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError, SafetensorError) as e:
        # a truncated safetensors file, a pickled .bin that weights_only refuses, weights of another shape
        raise UserError(f"the weights in {path} could not be read ({_first_line(e)}); give a directory written "
                        f"by save_pretrained, with its weights as .safetensors.") from None
    model = model.float().eval()  # fp32: the view and the metrics compare numbers, not samples
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    return model, tokenizer


def load_gguf(path: str, attn_implementation: str = "eager") -> tuple[nn.Module, Any, dict[str, Any]]:
    """A llama.cpp GGUF file as a plain transformers model (de-quantised, float32, eval mode), its
    tokenizer, and what the file is: {"gguf": path, "sha256": digest of the file, "quantization": its
    llama.cpp file type such as "Q4_1", "model_class": ...}.

    transformers reads the file (gguf_file=) but marks the model as quantised with gguf, and then
    refuses to save_pretrained it; the same class built from the config without that mark, holding
    the same state dict, saves and reloads like any model (the pruned model must be saved)."""
    import hashlib
    import os

    if not os.path.isfile(path):
        raise UserError(f"there is no GGUF file {path}; give the path of a .gguf file.")
    try:
        import accelerate  # noqa: F401  (transformers needs it to load a GGUF file)
        import gguf
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise UserError(f"reading the GGUF file {path} needs the packages transformers, gguf and accelerate; "
                        f"install them with `pip install respaths[gguf]`.") from None
    if not sys.stderr.isatty():  # as in load_dir
        transformers.utils.logging.disable_progress_bar()
    path = os.path.abspath(path)
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:  # the gguf package says what is wrong with the file
        raise UserError(f"{path} is not a readable GGUF file ({e}); give a file written by llama.cpp's tools.") from None
    field = reader.fields.get("general.file_type")
    quantization = (gguf.LlamaFileType(int(field.parts[field.data[0]][0])).name.removeprefix("MOSTLY_")
                    if field is not None else None)
    del reader  # a memory map of the whole file
    folder, name = os.path.split(path)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True,
                                                      attn_implementation=attn_implementation)
    except ValueError as e:  # transformers names the architecture it cannot read from GGUF
        raise UserError(f"transformers cannot read {path} as a model: {e}") from None
    config = loaded.config
    del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())  # strict: every key of the de-quantised model is used
    model = model.float().eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return model, tokenizer, {"gguf": path, "sha256": digest.hexdigest(), "quantization": quantization,
                              "model_class": type(model).__name__}
