"""What a plan is scored by: per-example statistics accumulated at each plan's leaf.

  LMLoss           decoders: next-token cross-entropy over a text (loss, perplexity);
  EmbeddingCosine  encoders: cosine similarity of the mean-pooled output to the full model's;
  ClassifierError  classifiers with labels: error, accuracy and loss.

Every metric has one interface, used by the lesion engine (respaths.engine.evaluate_plans) for all
plans of a trie at once, and by `metric(view, batches, plan)` for one plan the plain way:

  plans = metric.start(plans, n_blocks)  reset; the plans to run: the given ones, then any the
                                         metric needs beside them (cosine: the full model)
  metric.add(pids, output, batch)        the head's output for one batch, shared by plans pids
                                         (indices into start's list); batch: the dict of tensors
  metric.results()                       one dict of numbers per plan given to start
  metric.cost(result)                    what pruning minimises

A batch is a dict of tensors (input_ids, attention_mask, labels, ...); the view's stem gets
`inputs_of(batch)`. Each plan gets exactly one add per batch, batches in order.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .core import Plan, ResidualView, full_plan

Batch = dict[str, Any]


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def model_device(view: ResidualView) -> torch.device:
    p = next(view.model.parameters(), None) if view.model is not None else None
    return p.device if p is not None else torch.device("cpu")


def valid_tokens(batch: Batch, x: Tensor) -> Tensor:
    """[B, T] bool: the tokens that are not padding (all of them for images or unpadded text)."""
    m = batch.get("attention_mask")
    if m is None or x.dim() != 3 or m.shape != x.shape[:2]:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return m.to(x.device).bool()


def inputs_of(batch: Batch) -> Any:
    """What the view's stem takes: the batch without its labels (pixel values alone as a tensor)."""
    if set(batch) <= {"pixel_values", "labels"}:
        return batch["pixel_values"]
    return {k: v for k, v in batch.items() if k != "labels"}


class Metric:
    """The interface, and the plain way to score one plan: run it alone on every batch (core.run_plan),
    no trie. The engine's results are tested against this."""

    name = ""

    def start(self, plans: Sequence[Plan], n_blocks: int) -> list[Plan]:
        raise NotImplementedError

    def add(self, pids: Sequence[int], output: Tensor, batch: Batch) -> None:
        raise NotImplementedError

    def results(self) -> list[dict[str, float]]:
        raise NotImplementedError

    @torch.inference_mode()  # as in the engine, so that timings compare the trie alone
    def __call__(self, view: ResidualView, batches: Sequence[Batch], plan: Plan | None = None) -> dict[str, float]:
        device = model_device(view)
        plans = self.start([plan or full_plan(len(view))], len(view))
        for b in batches:
            b = to_device(b, device)
            for pid, p in enumerate(plans):
                self.add([pid], view(inputs_of(b), p), b)
        return self.results()[0]


class LMLoss(Metric):
    """Next-token cross-entropy, averaged over every predicted token of every batch."""

    name = "lm"

    def start(self, plans: Sequence[Plan], n_blocks: int) -> list[Plan]:
        self.nll, self.n = [0.0] * len(plans), [0] * len(plans)
        return list(plans)

    def add(self, pids: Sequence[int], output: Tensor, batch: Batch) -> None:
        ids = batch["input_ids"]
        ok = valid_tokens(batch, output)
        ok = ok[:, 1:] & ok[:, :-1]  # predicting a real token from a real token
        per_token = F.cross_entropy(output[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
        nll, n = float(per_token[ok.flatten()].double().sum()), int(ok.sum())
        for pid in pids:
            self.nll[pid] += nll
            self.n[pid] += n

    def results(self) -> list[dict[str, float]]:
        out = []
        for nll, n in zip(self.nll, self.n):
            loss = nll / n
            out.append({"n": n, "loss": loss, "ppl": math.exp(loss)})  # n: tokens predicted
        return out

    @staticmethod
    def cost(r: dict[str, float]) -> float:
        return r["loss"]


def next_token_loss(output: Tensor, batch: Batch) -> Tensor:
    """The mean next-token cross-entropy of one batch (differentiable): the loss path gradients of a
    decoder are taken of, over the same tokens LMLoss counts."""
    ids = batch["input_ids"].to(output.device)
    ok = valid_tokens(batch, output)
    ok = (ok[:, 1:] & ok[:, :-1]).flatten()
    per_token = F.cross_entropy(output[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
    return per_token[ok].mean()


def mean_pool(out: Tensor, valid: Tensor) -> Tensor:
    """Sentence embedding: the mean over non-padding tokens (sentence-transformers' pooling)."""
    if out.dim() == 2:
        return out.float()
    w = valid.unsqueeze(-1).float()
    return (out.float() * w).sum(1) / w.sum(1).clamp(min=1)


class EmbeddingCosine(Metric):
    """Cosine similarity of each example's pooled output to the full model's, averaged over examples.

    The full model is one of the plans run (added by start if absent), so its pooled output for a
    batch arrives by add like any plan's; other plans' pooled outputs of that batch wait for it."""

    name = "cosine"

    def start(self, plans: Sequence[Plan], n_blocks: int) -> list[Plan]:
        plans = list(plans)
        self.n_plans = len(plans)
        full = full_plan(n_blocks)
        if full not in plans:
            plans.append(full)
        self.ref_pid = plans.index(full)
        self.cos_sum, self.n = [0.0] * len(plans), [0] * len(plans)
        self.ref: Tensor | None = None  # the full model's pooled output of ref_batch
        self.ref_batch: Batch | None = None  # held, so that `is` identifies the batch
        self.waiting: list[tuple[int, Tensor]] = []  # (pid, pooled) of this batch, before its reference
        return plans

    def add(self, pids: Sequence[int], output: Tensor, batch: Batch) -> None:
        pooled = mean_pool(output, valid_tokens(batch, output))
        if self.ref_pid in pids:
            self.ref, self.ref_batch = pooled, batch
            for pid, p in self.waiting:
                self.score(pid, p)
            self.waiting = []
        for pid in pids:
            if self.ref_batch is batch:
                self.score(pid, pooled)
            else:
                self.waiting.append((pid, pooled))

    def score(self, pid: int, pooled: Tensor) -> None:
        cos = F.cosine_similarity(pooled, self.ref, dim=-1)
        self.cos_sum[pid] += float(cos.double().sum())
        self.n[pid] += len(cos)

    def results(self) -> list[dict[str, float]]:
        return [{"n": n, "cos": s / n} for s, n in zip(self.cos_sum[:self.n_plans], self.n[:self.n_plans])]

    @staticmethod
    def cost(r: dict[str, float]) -> float:
        return 1.0 - r["cos"]


class ClassifierError(Metric):
    """Top-1 error, accuracy and mean cross-entropy of a classifier on labelled batches.

    Also the engine's default (metric=None), whose PlanResults read `correct`, `losses` and `logits`."""

    name = "classifier"

    def __init__(self, keep_logits: bool = False) -> None:
        self.keep_logits = keep_logits

    def start(self, plans: Sequence[Plan], n_blocks: int) -> list[Plan]:
        self.correct: list[list[Tensor]] = [[] for _ in plans]
        self.losses = [0.0] * len(plans)  # sums over examples of the cross-entropy
        self.logits: list[list[Tensor]] = [[] for _ in plans]
        return list(plans)

    def add(self, pids: Sequence[int], output: Tensor, batch: Batch) -> None:
        y = batch["labels"]
        logits = output[:len(y)].float()  # a compiled run pads the last batch
        ok = logits.argmax(-1) == y
        loss = float(F.cross_entropy(logits, y, reduction="sum"))
        for pid in pids:
            self.correct[pid].append(ok.cpu())
            self.losses[pid] += loss
            if self.keep_logits:
                self.logits[pid].append(logits.cpu())

    def results(self) -> list[dict[str, float]]:
        out = []
        for correct, loss in zip(self.correct, self.losses):
            n = sum(len(c) for c in correct)
            errors = sum(int((~c).sum()) for c in correct)
            error = errors / n if n else float("nan")
            out.append({"n": n, "error": error, "accuracy": 1.0 - error, "loss": loss / n if n else float("nan")})
        return out

    @staticmethod
    def cost(r: dict[str, float]) -> float:
        return r["error"] + 1e-6 * r["loss"]  # error first; the loss breaks ties between equal errors


def metric_for(view: ResidualView, batches: Sequence[Batch]) -> Metric:
    """The metric that fits the view's task and the data: LM loss for decoders, error for labelled
    classifiers, embedding cosine otherwise."""
    task = getattr(view, "task", "")
    if task == "causal-lm":
        return LMLoss()
    if task == "classifier" and all("labels" in b for b in batches):
        return ClassifierError()
    return EmbeddingCosine()
