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
  metric.kept(pid)                       what it keeps per example of plan pid, for paired statistics
                                         (the classifier's "correct"; {} for the others)
  metric.cost(result)                    what pruning minimises

Each metric also owns its vocabulary, which every table, figure, claim and command line reads from it
(so a new metric is one subclass, found by its name through metric_named):

  name           what result files record as "metric"
  field          a record's main number: deltas are taken of it, the layers figures plot it
  higher_is_better
  label          the main number read larger = worse, as the study's figures and claims show it
                 ("test error", "LM loss", "1 − cosine"); worse(record) computes it
  chance(view)   `worse` for a model that knows nothing (None where unknown)
  scale, value_format, chance_format, axis_label   how the study's figures write `worse`
  text, change, gap                                how claims and tables write it, a difference, a gap
  format, show, baseline_line, describe            the command lines' words
  path_loss, targets(batch)   the loss path gradients are taken of, and its targets ("": none)

A batch is a dict of tensors (input_ids, attention_mask, labels, ...); the view's stem gets
`inputs_of(batch)`. Each plan gets exactly one add per batch, batches in order.

Whatever the metric, evaluating a plan gives one PlanResult: the plan, the metric's numbers (r["loss"]
reads them), the seconds it took and what the metric kept per example.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import stats
from .core import Plan, ResidualView, UserError, full_plan

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


@dataclass
class PlanResult:
    """One plan evaluated, whatever the metric (respaths.engine.evaluate_plans, Metric.__call__)."""

    plan: Plan
    numbers: dict[str, float]  # the metric's numbers (its `fields`): what a record holds
    seconds: float = 0.0  # in the engine: the plan's share of the wall time
    examples: dict[str, Tensor] = field(default_factory=dict)  # Metric.kept: per-example outputs

    def __getitem__(self, name: str) -> float:
        return self.numbers[name]


def classify(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(per-example correctness, summed cross-entropy) of one batch: how respaths counts a classifier's
    error everywhere (the trainer's test error, prune's before and after, ClassifierError in the engine).
    Extra rows past the labels (a compiled run pads the last batch) are ignored."""
    logits = logits[:len(labels)].float()
    return logits.argmax(-1) == labels, F.cross_entropy(logits, labels, reduction="sum")


METRICS: dict[str, type["Metric"]] = {}  # name -> class, filled as each subclass is defined


class Metric:
    """The interface, and the plain way to score one plan: run it alone on every batch (core.run_plan),
    no trie. The engine's results are tested against this. See the module docstring for the vocabulary."""

    name = ""
    field = ""
    higher_is_better = False
    fields: tuple[str, ...] = ()  # the numbers results() gives per plan
    label = ""
    axis_label = ""  # the study figures' y axis
    plot_label = ""  # the layers figures' y axis (of `field`)
    summary_name = ""  # the command line's "mean <summary_name> over ..." of `field`
    counts = "examples"  # what "n" counts
    scale, value_format, chance_format = 1.0, "{:.4f}", "{:.2f}"
    path_loss = ""  # what respaths.paths differentiates ("": the metric has no such loss)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):  # a class naming itself; a subclass that only tweaks one inherits no entry
            METRICS[cls.name] = cls

    def worse(self, record: dict[str, Any]) -> float:
        """The record's main number as figures and claims read it: larger = worse."""
        return -record[self.field] if self.higher_is_better else record[self.field]

    def chance(self, view: ResidualView) -> float | None:
        return None

    def text(self, x: float) -> str:
        """A value of `worse` in a claim or table (in the metric's own units)."""
        return f"{x:.5g}"

    def change(self, x: float) -> str:
        """A signed difference of `worse` values."""
        return f"{x:+.3g}"

    def gap(self, x: float) -> str:
        """An unsigned difference of `worse` values."""
        return f"{x:.3g}"

    def format(self, x: float) -> str:
        """A value of `field` on the command line."""
        return f"{x:.4f}"

    def show(self, r: dict[str, Any]) -> str:
        """A record's numbers on the command line, briefly."""
        return self.format(r[self.field])

    def baseline_line(self, r: dict[str, Any]) -> str:
        return f"baseline {self.summary_name} {self.show(r)} on {r['n']} {self.counts}"

    def describe(self, r: dict[str, Any]) -> str:
        """A result in words, as prune reports the metric before and after."""
        return f"{self.summary_name} {self.show(r)}"

    def cost(self, r: dict[str, float]) -> float:
        """What pruning minimises: by default the main number read larger = worse."""
        return self.worse(r)

    def rule_note(self, chance: float | None) -> str:
        """What stands for the error, and what chance is, where the report's rules read this metric."""
        return f"{self.label} stands for the error"

    def targets(self, batch: Batch) -> Any:
        """What path_loss compares the output with: the batch's labels."""
        return batch["labels"]

    def no_path_loss(self) -> str:
        """Why path gradients cannot be taken of this metric (a UserError's sentence)."""
        return (f"path gradients need a loss, and {self.summary_name} is none; run respaths paths on a decoder "
                f"(LM loss) or a classifier with labelled lines ('LABEL<TAB>TEXT').")

    def start(self, plans: Sequence[Plan], n_blocks: int) -> list[Plan]:
        raise NotImplementedError

    def add(self, pids: Sequence[int], output: Tensor, batch: Batch) -> None:
        raise NotImplementedError

    def results(self) -> list[dict[str, float]]:
        raise NotImplementedError

    def kept(self, pid: int) -> dict[str, Tensor]:
        return {}

    @torch.inference_mode()  # as in the engine, so that timings compare the trie alone
    def __call__(self, view: ResidualView, batches: Sequence[Batch], plan: Plan | None = None) -> PlanResult:
        device = model_device(view)
        start = time.perf_counter()
        plans = self.start([plan or full_plan(len(view))], len(view))
        for b in batches:
            b = to_device(b, device)
            for pid, p in enumerate(plans):
                self.add([pid], view(inputs_of(b), p), b)
        return PlanResult(plans[0], self.results()[0], time.perf_counter() - start, self.kept(0))


class LMLoss(Metric):
    """Next-token cross-entropy, averaged over every predicted token of every batch."""

    name = "lm"
    field = "loss"
    fields = ("n", "loss", "ppl")
    label = "LM loss"
    axis_label = "LM loss (next-token cross-entropy, nats)"
    plot_label = "next-token loss (nats)"
    summary_name = "LM loss"
    counts = "tokens"
    value_format, chance_format = "{:.3f}", "ln V = {:.2f}"
    path_loss = "next-token cross-entropy"

    def targets(self, batch: Batch) -> Any:
        return batch  # the next tokens, with the padding mask

    def chance(self, view: ResidualView) -> float | None:
        """ln(vocabulary size): the loss of the uniform distribution over the model's outputs."""
        if view.model is None:
            return None
        out = view.model.get_output_embeddings() if hasattr(view.model, "get_output_embeddings") else None
        size = getattr(out, "out_features", None) or getattr(getattr(view.model, "config", None), "vocab_size", None)
        return math.log(size) if size else None

    def show(self, r: dict[str, Any]) -> str:
        return f"{r['loss']:.4f} (ppl {r['ppl']:.4g})"

    def baseline_line(self, r: dict[str, Any]) -> str:
        return f"baseline LM loss {self.show(r)} on {r['n']} predicted tokens"

    def describe(self, r: dict[str, Any]) -> str:
        return f"LM loss {r['loss']:.4f} (perplexity {r['ppl']:.2f})"

    def rule_note(self, chance: float | None) -> str:
        return ("the LM loss (mean next-token cross-entropy in nats; lower is better) stands for the error, and "
                "chance is the uniform distribution's loss, ln(vocabulary size)"
                + (f" = {chance:.4f}" if chance is not None else ""))

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
    field = "cos"
    higher_is_better = True
    fields = ("n", "cos")
    label = "1 − cosine"
    axis_label = "1 − cosine to the full model's embedding"
    plot_label = "cosine to the full model's embedding"
    summary_name = "cosine to the full model"

    def no_path_loss(self) -> str:
        # the cosine to the full model is at its optimum, with gradient 0, on the full model's own output
        return ("path gradients need a loss, and an encoder's embedding cosine to the full model has "
                "gradient 0 at the full model; run respaths paths on a decoder (LM loss) or a classifier "
                "with labelled lines ('LABEL<TAB>TEXT').")

    def worse(self, record: dict[str, Any]) -> float:
        return 1.0 - record["cos"]

    def chance(self, view: ResidualView) -> float | None:
        """1 - cosine = 1: an embedding orthogonal to the full model's."""
        return 1.0

    def baseline_line(self, r: dict[str, Any]) -> str:
        return f"baseline embedding cosine {r['cos']:.4f} (the full model is the reference) on {r['n']} examples"

    def describe(self, r: dict[str, Any]) -> str:
        return f"cosine to the full model's embeddings {r['cos']:.4f}"

    def rule_note(self, chance: float | None) -> str:
        return ("1 − the cosine of each example's mean-pooled output to the full model's stands for the error "
                "(0 for the full model), and chance is 1 (an embedding orthogonal to the full model's)")

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


class ClassifierError(Metric):
    """Top-1 error, accuracy and mean cross-entropy of a classifier on labelled batches.

    Also the engine's default (metric=None). It keeps each example's correctness ("correct", and with
    keep_logits the logits), from which paired() makes the lesion study's paired statistics."""

    name = "classifier"
    field = "error"
    fields = ("n", "error", "accuracy", "loss")
    label = "test error"
    axis_label = "test error (%)"
    plot_label = "error"
    summary_name = "error"
    scale, value_format, chance_format = 100.0, "{:.2f}%", "{:.0f}%"
    path_loss = "cross-entropy"

    @staticmethod
    def guessing(num_classes: int | None) -> float | None:
        """The error of guessing among num_classes classes (None where their number is unknown)."""
        return 1.0 - 1.0 / num_classes if num_classes else None

    def text(self, x: float) -> str:
        return f"{100 * x:.2f}%"

    def change(self, x: float) -> str:
        return f"{100 * x:+.2f} pp"

    def gap(self, x: float) -> str:
        return f"{100 * x:.2f} pp"

    def format(self, x: float) -> str:
        return f"{100 * x:.2f}%"

    def baseline_line(self, r: dict[str, Any]) -> str:
        return f"baseline error {self.format(r['error'])} on {r['n']} images"

    def __init__(self, keep_logits: bool = False) -> None:
        self.keep_logits = keep_logits

    def start(self, plans: Sequence[Plan], n_blocks: int) -> list[Plan]:
        self.correct: list[list[Tensor]] = [[] for _ in plans]
        self.losses = [0.0] * len(plans)  # sums over examples of the cross-entropy
        self.logits: list[list[Tensor]] = [[] for _ in plans]
        return list(plans)

    def add(self, pids: Sequence[int], output: Tensor, batch: Batch) -> None:
        y = batch["labels"]
        ok, loss = classify(output, y)
        loss = float(loss)
        for pid in pids:
            self.correct[pid].append(ok.cpu())
            self.losses[pid] += loss
            if self.keep_logits:
                self.logits[pid].append(output[:len(y)].float().cpu())

    def results(self) -> list[dict[str, float]]:
        out = []
        for correct, loss in zip(self.correct, self.losses):
            n = sum(len(c) for c in correct)
            errors = sum(int((~c).sum()) for c in correct)
            error = errors / n if n else float("nan")
            out.append({"n": n, "error": error, "accuracy": 1.0 - error, "loss": loss / n if n else float("nan")})
        return out

    def kept(self, pid: int) -> dict[str, Tensor]:
        correct = self.correct[pid]
        out = {"correct": torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)}
        if self.keep_logits:
            out["logits"] = torch.cat(self.logits[pid])
        return out

    @staticmethod
    def cost(r: dict[str, float]) -> float:
        return r["error"] + 1e-6 * r["loss"]  # error first; the loss breaks ties between equal errors

    @staticmethod
    def test_numbers(r: PlanResult) -> dict[str, Any]:
        """n, errors, error and its 95% Wilson interval, from the examples' correctness."""
        n, errors = len(r.examples["correct"]), int((~r.examples["correct"]).sum())
        return {"n": n, "errors": errors, "error": r["error"], "error_ci": list(stats.wilson_ci(errors, n))}

    @classmethod
    def paired(cls, r: PlanResult, base: PlanResult, seed: int) -> dict[str, Any]:
        """The numbers of a lesion record of the paper's study: test_numbers and the mean loss, then
        paired statistics against the baseline image by image (delta with its bootstrap interval,
        McNemar's p, the discordant images; respaths.stats.compare)."""
        return {**cls.test_numbers(r), "loss": r["loss"],
                **stats.compare(base.examples["correct"], r.examples["correct"], seed=seed)}


def metric_named(name: str) -> Metric:
    """The metric of that name (as result files record it)."""
    if name not in METRICS:
        names = list(METRICS)
        raise UserError(f"unknown metric {name!r}; use {', '.join(names[:-1])} or {names[-1]}.")
    return METRICS[name]()


def metric_for(view: ResidualView, batches: Sequence[Batch] | None) -> Metric:
    """The metric that fits the view's task and the data: LM loss for decoders, error for labelled
    classifiers, embedding cosine otherwise (batches None: no labels known)."""
    task = getattr(view, "task", "")
    if task == "causal-lm":
        return LMLoss()
    if task == "classifier" and batches is not None and all("labels" in b for b in batches):
        return ClassifierError()
    return EmbeddingCosine()
