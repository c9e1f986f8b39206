"""Greedy layer pruning of a Llama-style model: the trie engine against the per-candidate way.

    python benchmarks/layer_sweep_speed.py                      # 40 layers, 8 greedy steps, 3 repetitions
    python benchmarks/layer_sweep_speed.py --layers 32          # Llama-2-7B's depth (bound 1.87x)
    python benchmarks/layer_sweep_speed.py --layers 16 --steps 15
    python benchmarks/layer_sweep_speed.py --model SmolLM2-135M-Instruct.Q4_1.gguf --text wiki.test.raw \
        --windows 4 --seq-len 128 --steps 2 --repeats 1   # a real model (a GGUF file or a HF directory)

SLEB's protocol (Song et al. 2024): at each step remove the block whose removal raises the LM loss
(next-token cross-entropy on fixed token windows) least, and repeat. The per-candidate way is what
SLEB, BlockPruner and FinerCut do: one full forward over the windows per candidate
(respaths.layers.importance.per_candidate_evaluator, metric(view, batches, plan)). The engine scores
all candidates of a step in one trie (respaths.engine.evaluate_plans with metric=LMLoss): the
candidate "remove block i" shares blocks 0..i-1 with the others.

The bound: with L' blocks left, the candidates run L'(L'-1) blocks separately and about
(L'-1)(L'/2 + 1) in the trie, a ratio of 2L'/(L'+2): 1.78 at 16 blocks, 1.88 at 32, 1.90 at 40
(Llama-2-13B's depth, the default; 8 steps remove 20% of it, as SLEB does). Deleting a
layer of a pre-LN model is skipping it, so only run steps count (engine.trie_cost, runs_only).
The engine cannot beat the bound by more than the stem and the per-plan bookkeeping it saves.
That bound counts blocks only; every candidate also runs the head and the loss over the vocabulary,
both ways, so a second bound is printed in time (bound_with_head): for a real decoder's large
vocabulary it is the one to compare with (SmolLM2-135M: head and loss cost about 12 layers).

Weights are random (from a LlamaConfig, torch.manual_seed(0)), float32, eval mode; the windows are
random token ids. With --model, a real decoder (opened as `respaths layers` opens it) on the first
--windows windows of --text instead. Both ways run in this process, interleaved step by step: each greedy step scores
its candidates both ways back to back (which goes first alternates), so that a shared CPU's
changing load hits them alike; both must pick the same block with losses equal within 1e-5
relative at every step, so the per-candidate way run alone would choose the same blocks.
Printed: the summed times and their ratio, and the ratio of each way's fastest repetition (the
load of a shared machine only ever adds time).

Measured on the 2-core machine this was written on, 1 thread, shared with other jobs (load 2-4):
  defaults (40 layers, hidden 64, 8 windows of 64 tokens, 8 steps, 3 repetitions): per-candidate
      91.6 s, engine 50.3 s, 1.82x; a second run 98.6 s / 52.7 s, 1.87x; bound 1.90x
      (10,976 block evaluations instead of 20,816)
  --layers 32: 77.3 s / 41.1 s, 1.88x; bound 1.87x (6,752 instead of 12,624)
  the same blocks chosen both ways every time.
On 2026-12-06, the machine otherwise idle (load under 1, AMD EPYC, AVX-512):
  --repeats 1: 20.5 s / 11.0 s, 1.87x; bounds 1.90x in blocks, 1.85x with the head (0.9 blocks' worth)
  --model SmolLM2-135M-Instruct.Q4_1.gguf --text wiki.test.raw --windows 2 --seq-len 128 --batch-size 2
      --steps 2 --repeats 3: 159.5 s / 109.6 s, 1.45x (1.47x, 1.44x, 1.46x); bounds 1.87x in blocks,
      1.49x with the head (12.1 blocks' worth)
"""
from __future__ import annotations

import argparse
import time

import torch

import respaths
from respaths.engine import trie_cost
from respaths.data.text import token_batches
from respaths.layers.importance import engine_evaluator, greedy_pruning, per_candidate_evaluator
from respaths.metrics import LMLoss
from respaths.opening import open_model


def llama(layers: int, hidden: int, vocab: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         attn_implementation="eager")
    return LlamaForCausalLM(config).float().eval()


def bound_with_head(view, batches, metric, candidates: int, separate: int, trie: int, tries: int = 3) -> tuple[float, float]:
    """The bound in time rather than block evaluations: each candidate also runs the head and the loss
    over the vocabulary, both ways, and the trie cannot share them (SmolLM2's head, 576 x 49,152, is
    about 8 of its layers). Timed here, fastest of `tries`: a forward over the batches with every block
    deleted (stem, head, loss: t0) and one with none (t0 + L blocks). Returns (bound, t0 / block time)."""
    L = len(view)
    run = per_candidate_evaluator(view, batches, metric)
    fastest = {}
    for name, plan in (("none", respaths.delete_blocks(L, range(L))), ("all", respaths.delete_blocks(L, []))):
        times = []
        for _ in range(tries):
            t = time.perf_counter()
            run([plan])
            times.append(time.perf_counter() - t)
        fastest[name] = min(times)
    t0, block = fastest["none"], max(fastest["all"] - fastest["none"], 1e-9) / L
    return (candidates * t0 + separate * block) / (candidates * t0 + trie * block), t0 / block


class BothWays:
    """A greedy step's evaluator that scores the candidates both ways, back to back (the one that goes
    first alternates), times each, checks that both pick the same block with losses within 1e-5
    relative, and hands greedy_pruning the engine's results."""

    def __init__(self, view, batches, metric):
        self.ways = {"per-candidate": per_candidate_evaluator(view, batches, metric),
                     "engine": engine_evaluator(view, batches, metric)}
        self.metric = metric
        self.seconds = {w: 0.0 for w in self.ways}
        self.plans: list[list] = []  # the candidates of each call
        self.calls = 0

    def __call__(self, plans):
        plans = list(plans)
        results = {}
        order = list(self.ways) if self.calls % 2 == 0 else list(self.ways)[::-1]
        self.calls += 1
        for w in order:
            t = time.perf_counter()
            results[w] = self.ways[w](plans)
            self.seconds[w] += time.perf_counter() - t
        # candidates come in block order, so a tie goes to the lower index, as in greedy_pruning
        pick = {w: min(range(len(plans)), key=lambda j: (self.metric.cost(r[j]), j)) for w, r in results.items()}
        assert pick["engine"] == pick["per-candidate"], pick
        for a, b in zip(results["engine"], results["per-candidate"]):
            assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(b["loss"]), (a, b)
        self.plans.append(plans)
        return results["engine"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a real decoder: a Hugging Face directory or a GGUF file (then --text)")
    p.add_argument("--text", help="with --model: the UTF-8 text whose first --windows windows are scored")
    p.add_argument("--layers", type=int, default=40)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--windows", type=int, default=8, help="token windows (the calibration set)")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4, help="windows per batch")
    p.add_argument("--steps", type=int, default=8, help="greedy steps (blocks removed); SLEB removes ~20%%")
    p.add_argument("--repeats", type=int, default=3, help="greedy runs, each scoring every step both ways")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.model is None) != (args.text is None):
        raise SystemExit("--model and --text go together.")
    if args.model is not None:
        opened = open_model(args.model, text=args.text, seq_len=args.seq_len, batch_size=args.batch_size,
                            limit=args.windows)
        view, batches = opened.view, opened.data
        what = (f"{type(opened.model).__name__} from {args.model}, {len(view)} layers, hidden "
                f"{opened.model.config.hidden_size}")
    else:
        if args.layers < 16:
            raise SystemExit("--layers: at least 16 (the issue's size).")
        model = llama(args.layers, args.hidden, args.vocab)
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, args.vocab, (args.windows * args.seq_len,), generator=g)
        batches = token_batches(ids, args.seq_len, args.batch_size)
        view = respaths.view(model)
        what = f"Llama-style, {args.layers} layers, hidden {args.hidden}"
    metric = LMLoss()
    print(f"{what}, {args.windows} windows of {args.seq_len} tokens in {len(batches)} batches, {args.steps} greedy "
          f"steps, {torch.get_num_threads()} threads", flush=True)

    per_rep = []
    chosen = None
    for rep in range(args.repeats):
        both = BothWays(view, batches, metric)
        steps = greedy_pruning(view, batches, metric, args.steps, both)
        picks = [s["block"] for s in steps]
        assert chosen in (None, picks), "a repetition chose differently"
        chosen = picks
        per_rep.append(both.seconds)
        print(f"  repetition {rep + 1}: per-candidate {both.seconds['per-candidate']:.1f} s, "
              f"engine {both.seconds['engine']:.1f} s ({both.seconds['per-candidate'] / both.seconds['engine']:.2f}x)",
              flush=True)
    # block evaluations per batch, summed over the steps: each step's trie vs its candidates run alone
    trie = sum(trie_cost(c, runs_only=True)[0] for c in both.plans)
    separate = sum(trie_cost(c, runs_only=True)[1] for c in both.plans)
    total = {w: sum(r[w] for r in per_rep) for w in per_rep[0]}
    best = {w: min(r[w] for r in per_rep) for w in per_rep[0]}
    print(f"chosen blocks (identical both ways, every repetition): {chosen}")
    losses = " ".join(f"{s['result']['loss']:.5f}" for s in steps)  # the last repetition's
    print(f"LM loss after each step: {losses}")
    candidates = sum(len(c) for c in both.plans)
    with_head, head_blocks = bound_with_head(view, batches, metric, candidates, separate, trie)
    print(f"block evaluations: per-candidate {separate * len(batches)}, engine {trie * len(batches)} "
          f"({len(batches)} batches); bound {separate / trie:.2f}x")
    print(f"with the stem, head and loss each of the {candidates} candidates runs both ways (timed: "
          f"{head_blocks:.1f} blocks' worth): bound {with_head:.2f}x")
    print(f"per-candidate {total['per-candidate']:.1f} s, engine {total['engine']:.1f} s ({args.repeats} repetitions, "
          f"interleaved step by step): speed-up {total['per-candidate'] / total['engine']:.2f}x; "
          f"fastest repetition each way {best['per-candidate'] / best['engine']:.2f}x; bound {separate / trie:.2f}x in "
          f"block evaluations, {with_head:.2f}x with the head")


if __name__ == "__main__":
    main()
