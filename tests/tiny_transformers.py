"""Tiny Hugging Face models (BERT, GPT-2, Llama, ViT; random weights), their inputs, and the naive
references the transformer tests compare respaths against.

The naive references never use respaths' view: they run the transformers model itself, with forward
hooks on its layers or with its layer list really edited in a copy (layers removed, repeated,
reordered, or wrapped in a module that runs several on the same input and averages)."""
import copy

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")
from transformers import (BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel,  # noqa: E402
                          GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, ViTConfig,
                          ViTForImageClassification)


V = 97  # vocabulary of the tiny models
LAYERS = {"bert": "encoder.layer", "bertcls": "encoder.layer", "bertmlm": "encoder.layer", "gpt2": "h",
          "llama": "layers", "vit": "layers"}


def tiny(name, attn="eager"):
    torch.manual_seed({"bert": 0, "bertcls": 1, "gpt2": 2, "llama": 3, "vit": 4, "bertmlm": 5}[name])
    small = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, attn_implementation=attn)
    if name == "bert":
        m = BertModel(BertConfig(vocab_size=V, num_hidden_layers=3, **small))
    elif name == "bertcls":
        m = BertForSequenceClassification(BertConfig(vocab_size=V, num_hidden_layers=3, num_labels=3, **small))
    elif name == "bertmlm":
        m = BertForMaskedLM(BertConfig(vocab_size=V, num_hidden_layers=2, **small))
    elif name == "gpt2":
        m = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=5, n_head=4, n_positions=64,
                                       bos_token_id=1, eos_token_id=2, attn_implementation=attn))
    elif name == "llama":
        m = LlamaForCausalLM(LlamaConfig(vocab_size=V, num_hidden_layers=5, num_key_value_heads=2,
                                         pad_token_id=0, **small))
    else:
        m = ViTForImageClassification(ViTConfig(image_size=16, patch_size=4, num_hidden_layers=4, num_labels=5,
                                                **small))
    return m.eval()


@pytest.fixture(scope="module")
def models():
    return {name: tiny(name) for name in LAYERS}


def text_inputs(padding="right"):
    """Three sequences of 9 tokens; the second and third padded, with an attention mask."""
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, V, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    if padding == "right":
        mask[1, 6:] = 0
        mask[2, 4:] = 0
    else:
        mask[1, :3] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def inputs_for(name, padding="right"):
    if name == "vit":
        return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    return text_inputs(padding)


def model_out(m, inp):
    # cache off, as in the view: a decoder's KV cache changes the keys' memory layout, and with it
    # the rounding of the attention scores (by ~1e-8) though not their value
    out = m(pixel_values=inp) if isinstance(inp, torch.Tensor) else m(**inp, use_cache=False)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def edited(model, name, order):
    """A copy of the model whose layer list is `order`: indices, or tuples run in parallel."""
    m = copy.deepcopy(model)
    parent, _, attr = ("base_model." + LAYERS[name]).rpartition(".")
    old = m.get_submodule(parent + "." + attr)
    new = nn.ModuleList([Parallel([old[j] for j in i]) if isinstance(i, tuple) else old[i] for i in order])
    setattr(m.get_submodule(parent), attr, new)
    m.config.num_hidden_layers = len(new)  # Llama runs layers[:num_hidden_layers]
    return m


class Parallel(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, *args, **kwargs):
        outs = [layer(x, *args, **kwargs) for layer in self.layers]
        return sum(outs) / len(outs)


def layer_io(model, name, inp):
    """(input, output) of every layer of the model's own forward, caught by hooks."""
    seen = []
    hooks = [layer.register_forward_hook(lambda mod, args, out: seen.append((args[0], out)))
             for layer in model.get_submodule("base_model." + LAYERS[name])]
    with torch.no_grad():
        model_out(model, inp)
    for h in hooks:
        h.remove()
    return seen


# ---------------------------------------------------------------------------------------------
# The command


def save_with_tokenizer(model, path, text):
    from tokenizers import Tokenizer, models as tm, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tm.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([text], trainers.WordLevelTrainer(vocab_size=V, special_tokens=["[PAD]", "[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(path)
    model.save_pretrained(path)


TEXT = ("the cat sat on the mat and the dog sat on the log while a bird sang in the tree "
        "and the sun rose over the hill so the farmer went to the field with his dog ") * 4
