"""Which layers of a transformer matter: the lesion question, asked the way the 2024 papers ask it.

Metrics of a plan (a model with blocks deleted, repeated, reordered or run in parallel):
  LMLoss           decoders: next-token cross-entropy over a text (loss, perplexity);
  EmbeddingCosine  encoders: cosine similarity of the mean-pooled output to the full model's;
  ClassifierError  classifiers with labels: error, accuracy and loss (through respaths.engine).

Methods, each equal to a naive computation (tests/test_transformers.py):
  block_influence     ShortGPT (Men et al. 2024): BI_i = 1 - cos(x_i, x_{i+1}) averaged over tokens,
                      x_i the input of block i; the least influential blocks are removed first.
  angular_distances   Gromov et al. 2024: d(l, l+n) = arccos(cos(x_l, x_{l+n})) / pi of the last
                      token, averaged over sequences; remove the n blocks l*..l*+n-1 with the
                      smallest d(l, l+n).
  greedy_pruning      repeatedly remove the block whose deletion costs least by the metric,
                      compared with removing blocks in Block-Influence order and in random order.
  painters_plan       "Transformer Layers as Painters" (Sun et al. 2024) on k middle blocks: skip,
                      repeat (the centre block k times), reverse, random order, parallel (run on the
                      same input, outputs averaged) and looped parallel (the parallel step repeated).

`run_layers` runs one method end to end into a ResultStore (the `respaths layers` command).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .core import DELETE, PARALLEL, RUN, Plan, ResidualView, UserError, delete_blocks, full_plan

METHODS = ("influence", "angular", "greedy", "painters")
PAINTERS = ("skip", "repeat", "reverse", "random", "parallel", "looped")

Batch = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Data: lists of batches (dicts of tensors), so that every plan sees exactly the same tokens


def token_batches(ids: Tensor, seq_len: int, batch_size: int) -> list[Batch]:
    """A 1-d tensor of token ids cut into windows of seq_len tokens (a shorter tail window is kept
    if it has at least two tokens, one to predict from and one to predict)."""
    ids = ids.flatten()
    windows = [ids[s:s + seq_len] for s in range(0, len(ids), seq_len)]
    if windows and len(windows[-1]) < 2:
        windows.pop()
    batches = []
    for s in range(0, len(windows), batch_size):
        group = windows[s:s + batch_size]
        # a short tail window goes in a batch of its own, so that no batch needs padding
        full = [w for w in group if len(w) == len(group[0])]
        batches.append({"input_ids": torch.stack(full)})
        if len(full) < len(group):
            batches.append({"input_ids": torch.stack(group[len(full):])})
    return batches


def sentence_batches(tokenizer: Any, lines: Sequence[str], seq_len: int, batch_size: int,
                     labels: Sequence[int] | None = None) -> list[Batch]:
    """One example per line, padded per batch, with an attention mask."""
    batches = []
    for s in range(0, len(lines), batch_size):
        enc = tokenizer(list(lines[s:s + batch_size]), padding=True, truncation=True, max_length=seq_len,
                        return_tensors="pt")
        b = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if labels is not None:
            b["labels"] = torch.tensor(list(labels[s:s + batch_size]), dtype=torch.long)
        batches.append(b)
    return batches


def read_text(path: str | Path, view: ResidualView, tokenizer: Any, seq_len: int, batch_size: int,
              limit: int | None = None) -> list[Batch]:
    """A text file as batches for the view's task: a decoder reads the whole file as one stream of
    tokens; an encoder or classifier reads one example per non-empty line, "LABEL<TAB>TEXT" lines
    giving integer labels."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no text file {path}; give a UTF-8 text file with --text.")
    if tokenizer is None:
        raise UserError(f"the model has no tokenizer saved beside it; save one there (tokenizer.save_pretrained) "
                        f"to read {path}.")
    text = path.read_text(encoding="utf-8", errors="replace")
    if getattr(view, "task", "") == "causal-lm":
        ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
        batches = token_batches(ids if limit is None else ids[:limit * seq_len], seq_len, batch_size)
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()][:limit]
        labels = None
        split = [ln.split("\t", 1) for ln in lines]
        if lines and all(len(p) == 2 and p[0].strip().lstrip("-").isdigit() for p in split):
            labels, lines = [int(p[0]) for p in split], [p[1] for p in split]
        batches = sentence_batches(tokenizer, lines, seq_len, batch_size, labels)
    if not batches:
        raise UserError(f"{path} holds too little text for one batch; give a longer file.")
    return batches


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


# ---------------------------------------------------------------------------------------------
# Metrics: metric(view, batches, plan) -> dict of numbers; metric.cost(result) is what pruning minimises


class LMLoss:
    """Next-token cross-entropy, averaged over every predicted token of every batch."""

    name = "lm"

    @torch.no_grad()
    def __call__(self, view: ResidualView, batches: Sequence[Batch], plan: Plan | None = None) -> dict[str, float]:
        device, nll, n = model_device(view), 0.0, 0
        for b in batches:
            b = to_device(b, device)
            logits = view(inputs_of(b), plan)
            ids = b["input_ids"]
            ok = valid_tokens(b, logits)
            ok = ok[:, 1:] & ok[:, :-1]  # predicting a real token from a real token
            per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
            nll += float(per_token[ok.flatten()].double().sum())
            n += int(ok.sum())
        loss = nll / n
        return {"n": n, "loss": loss, "ppl": math.exp(loss)}  # n: tokens predicted

    @staticmethod
    def cost(r: dict[str, float]) -> float:
        return r["loss"]


def mean_pool(out: Tensor, valid: Tensor) -> Tensor:
    """Sentence embedding: the mean over non-padding tokens (sentence-transformers' pooling)."""
    if out.dim() == 2:
        return out.float()
    w = valid.unsqueeze(-1).float()
    return (out.float() * w).sum(1) / w.sum(1).clamp(min=1)


class EmbeddingCosine:
    """Cosine similarity of each example's pooled output to the full model's, averaged over examples."""

    name = "cosine"

    def __init__(self) -> None:
        self.reference: list[Tensor] | None = None

    @torch.no_grad()
    def pooled(self, view: ResidualView, batches: Sequence[Batch], plan: Plan | None) -> list[Tensor]:
        device, out = model_device(view), []
        for b in batches:
            b = to_device(b, device)
            y = view(inputs_of(b), plan)
            out.append(mean_pool(y, valid_tokens(b, y)))
        return out

    def __call__(self, view: ResidualView, batches: Sequence[Batch], plan: Plan | None = None) -> dict[str, float]:
        if self.reference is None:
            self.reference = self.pooled(view, batches, None)
        cos = torch.cat([F.cosine_similarity(p, r, dim=-1)
                         for p, r in zip(self.pooled(view, batches, plan), self.reference)])
        return {"n": len(cos), "cos": float(cos.double().mean())}

    @staticmethod
    def cost(r: dict[str, float]) -> float:
        return 1.0 - r["cos"]


class ClassifierError:
    """Top-1 error, accuracy and mean cross-entropy of a classifier on labelled batches."""

    name = "classifier"

    def __call__(self, view: ResidualView, batches: Sequence[Batch], plan: Plan | None = None) -> dict[str, float]:
        from .engine import evaluate_plans

        device = model_device(view)
        data = [(inputs_of(to_device(b, device)), b["labels"]) for b in batches]
        r = evaluate_plans(view, data, [plan or full_plan(len(view))], device=device)[0]
        return {"n": r.n, "error": r.error, "accuracy": 1.0 - r.error, "loss": r.loss / r.n}

    @staticmethod
    def cost(r: dict[str, float]) -> float:
        return r["error"] + 1e-6 * r["loss"]  # error first; the loss breaks ties between equal errors


def metric_for(view: ResidualView, batches: Sequence[Batch]):
    """The metric that fits the view's task and the data: LM loss for decoders, error for labelled
    classifiers, embedding cosine otherwise."""
    task = getattr(view, "task", "")
    if task == "causal-lm":
        return LMLoss()
    if task == "classifier" and all("labels" in b for b in batches):
        return ClassifierError()
    return EmbeddingCosine()


# ---------------------------------------------------------------------------------------------
# Scores from one pass of the full model: x_0 (the stem's output) .. x_L (the last block's output)


@torch.no_grad()
def block_influence(view: ResidualView, batches: Sequence[Batch]) -> list[float]:
    """ShortGPT's Block Influence of each block: 1 - cos(input, output), averaged over all real tokens."""
    device = model_device(view)
    total = torch.zeros(len(view), dtype=torch.float64)
    n = 0
    for b in batches:
        b = to_device(b, device)
        x = view.stem(inputs_of(b))
        ok = valid_tokens(b, x)
        for i, block in enumerate(view.blocks):
            y = block(x)
            total[i] += float((1 - F.cosine_similarity(x.float(), y.float(), dim=-1))[ok].double().sum())
            x = y
        n += int(ok.sum())
    return (total / n).tolist()


def readout_index(batch: Batch, x: Tensor, token: str) -> Tensor:
    """[B] position of each sequence's last real token ("last") or its first token ("first")."""
    if token == "first":
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    ok = valid_tokens(batch, x).long()
    pos = torch.arange(x.shape[1], device=x.device)
    return (ok * (pos + 1)).argmax(1)  # the largest position whose token is real


@torch.no_grad()
def angular_distances(view: ResidualView, batches: Sequence[Batch], token: str = "last") -> Tensor:
    """D[l, m] = arccos(cos(x_l, x_m)) / pi of the readout token, averaged over sequences, for
    0 <= l <= m <= L (x_l the input of block l, x_L the last block's output)."""
    device = model_device(view)
    L = len(view)
    total = torch.zeros(L + 1, L + 1, dtype=torch.float64)
    n = 0
    for b in batches:
        b = to_device(b, device)
        x = view.stem(inputs_of(b))
        idx = readout_index(b, x, token)
        rows = torch.arange(len(idx), device=idx.device)
        read = [x[rows, idx]]
        for block in view.blocks:
            x = block(x)
            read.append(x[rows, idx])
        unit = F.normalize(torch.stack(read).double(), dim=-1)  # [L+1, B, D]
        # the angle as 2 atan2(|u - v|, |u + v|): arccos(u.v) loses digits when the angle is small
        for l in range(L + 1):
            diff, summ = (unit[l] - unit).norm(dim=-1), (unit[l] + unit).norm(dim=-1)  # [L+1, B]
            total[l] += (2 * torch.atan2(diff, summ) / math.pi).sum(-1).cpu()
        n += len(idx)
    return (total / n).triu()


def best_span(distances: Tensor, n: int) -> int:
    """Gromov et al.'s choice of which n consecutive blocks to remove: l* = argmin_l d(l, l + n)."""
    L = distances.shape[0] - 1
    if not 1 <= n <= L:
        raise UserError(f"cannot remove {n} consecutive blocks of {L}.")
    return int(torch.stack([distances[l, l + n] for l in range(L - n + 1)]).argmin())


# ---------------------------------------------------------------------------------------------
# Pruning orders


def prune_plan(n_blocks: int, removed: Iterable[int], label: str) -> Plan:
    return delete_blocks(n_blocks, removed, label=label)


def greedy_pruning(view: ResidualView, batches: Sequence[Batch], metric: Any, steps: int | None = None,
                   evaluate: Callable[[Plan], dict] | None = None) -> list[dict[str, Any]]:
    """Remove one block at a time, each time the one whose removal gives the lowest metric cost.

    Returns one entry per step: {"k", "removed" (in order of removal), "block", "result"};
    ties go to the lower index. `evaluate(plan)` defaults to metric(view, batches, plan)."""
    evaluate = evaluate or (lambda plan: metric(view, batches, plan))
    L = len(view)
    candidates = view.deletable
    steps = len(candidates) - 1 if steps is None else min(steps, len(candidates))
    removed: list[int] = []
    out = []
    for k in range(1, steps + 1):
        scored = []
        for i in candidates:
            if i in removed:
                continue
            r = evaluate(prune_plan(L, removed + [i], f"greedy {k}: try {i}"))
            scored.append((metric.cost(r), i, r))
        cost, i, r = min(scored, key=lambda t: (t[0], t[1]))
        removed.append(i)
        out.append({"k": k, "removed": list(removed), "block": i, "result": r})
    return out


def random_order(n_blocks: int, seed: int, candidates: Sequence[int] | None = None) -> list[int]:
    cands = list(range(n_blocks)) if candidates is None else list(candidates)
    g = torch.Generator().manual_seed(seed)
    return [cands[j] for j in torch.randperm(len(cands), generator=g).tolist()]


def influence_order(influence: Sequence[float]) -> list[int]:
    """Blocks from least to most influential (ties: lower index first)."""
    return sorted(range(len(influence)), key=lambda i: (influence[i], i))


# ---------------------------------------------------------------------------------------------
# "Transformer Layers as Painters": what happens to the middle blocks


def middle_span(n_blocks: int, k: int) -> list[int]:
    """The k blocks in the middle; the first and the last block always stay in place."""
    if not 1 <= k <= n_blocks - 2:
        raise UserError(f"a middle span of {k} blocks does not fit in {n_blocks} blocks with the first and "
                        f"last kept; use 1..{n_blocks - 2}.")
    start = (n_blocks - k) // 2
    return list(range(start, start + k))


def painters_plan(n_blocks: int, k: int, variant: str, seed: int = 0, loops: int | None = None) -> Plan:
    """The plan that treats the k middle blocks as `variant` says; all other blocks run in order.

    skip: the span deleted; repeat: the span replaced by its centre block run k times; reverse;
    random: a random permutation (seeded); parallel: one step running the span on the same input
    and averaging; looped: that parallel step repeated `loops` times (default k, the compute of
    the original span)."""
    span = middle_span(n_blocks, k)
    before = [(RUN, i) for i in range(span[0])]
    after = [(RUN, i) for i in range(span[-1] + 1, n_blocks)]
    if variant == "skip":
        mid = [(DELETE, i) for i in span]
    elif variant == "repeat":
        mid = [(RUN, span[len(span) // 2])] * k
    elif variant == "reverse":
        mid = [(RUN, i) for i in reversed(span)]
    elif variant == "random":
        mid = [(RUN, i) for i in random_order(n_blocks, seed, span)]
    elif variant == "parallel":
        mid = [(PARALLEL, tuple(span))]
    elif variant == "looped":
        mid = [(PARALLEL, tuple(span))] * (k if loops is None else loops)
    else:
        raise UserError(f"unknown painters variant {variant!r}; use one of {', '.join(PAINTERS)}.")
    label = f"{variant} {k} middle" + (f" (seed {seed})" if variant == "random" else "")
    return Plan(tuple(before + mid + after), label=label)


# ---------------------------------------------------------------------------------------------
# One method end to end, into a ResultStore
#
# Records follow the lesion schema (respaths.lesion): key, kind, k, sample, deleted, order, plan,
# n, the metric's fields (loss and ppl | cos | error, accuracy and loss), seconds. Keys:
#   baseline                        the full model
#   influence block=I               Block Influence of block I (fields block, name, influence)
#   influence-order k=K             the K least influential blocks deleted
#   random-order k=K s=S            the first K blocks of random order S deleted
#   greedy-try k=K removed=A+B+C    greedy step K trying C after A, B
#   greedy k=K                      the K blocks greedy pruning chose (removed_order: in order)
#   angular n=N l=L                 angular distance d(L, L+N) (fields n, l, distance)
#   angular-prune n=N               the N consecutive blocks at the best l deleted
#   painters VARIANT k=K [s=S]      VARIANT applied to the K middle blocks (field span)

METRIC_FIELDS = ("n", "loss", "ppl", "cos", "error", "accuracy")


def plan_record(key: str, kind: str, plan: Plan, result: dict[str, Any], seconds: float, k: int = 0,
                sample: int = 0, **extra: Any) -> dict:
    return {"key": key, "kind": kind, "k": k, "sample": sample, "deleted": plan.deleted,
            "order": [list(i) if isinstance(i, tuple) else i for i in plan.order], "plan": plan.key(),
            "label": plan.label, **extra, **result, "seconds": seconds}


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class Runner:
    """Evaluates each distinct plan once (memoised by plan key, across resumes too) into a ResultStore."""

    def __init__(self, view: ResidualView, batches: Sequence[Batch], metric: Any, store: Any, progress: bool = True):
        self.view, self.batches, self.metric, self.store = view, batches, metric, store
        self.memo = {r["plan"]: r for r in store.records if "plan" in r}
        self.bar = tqdm(desc="plans", unit="plan", disable=not progress, leave=False)

    def evaluate(self, key: str, kind: str, plan: Plan, **fields: Any) -> dict:
        """The metric's result for the plan; appended to the store under key unless already there."""
        old = self.store.get(key) or self.memo.get(plan.key())
        if old is not None:
            result, seconds = {f: old[f] for f in METRIC_FIELDS if f in old}, old["seconds"]
        else:
            t = time.perf_counter()
            result = self.metric(self.view, self.batches, plan)
            seconds = time.perf_counter() - t
            self.bar.update(1)
        if not self.store.done(key):
            self.store.append(plan_record(key, kind, plan, result, seconds, **fields))
            self.memo.setdefault(plan.key(), self.store.get(key))
        return result

    def note(self, key: str, kind: str, **fields: Any) -> None:
        """A record that is a score, not a plan (a block's influence, an angular distance)."""
        if not self.store.done(key):
            self.store.append({"key": key, "kind": kind, **fields})


def run_layers(view: ResidualView, batches: Sequence[Batch], method: str, store: Any, *, metric: Any = None,
               steps: int | None = None, seeds: int = 3, spans: Sequence[int] | None = None,
               variants: Sequence[str] = PAINTERS, loops: int | None = None, token: str = "last",
               progress: bool = True) -> Path:
    """Run one method (influence | angular | greedy | painters) into the store and finish it."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; use one of {', '.join(METHODS)}.")
    metric = metric or metric_for(view, batches)
    run = Runner(view, batches, metric, store, progress)
    L = len(view)
    last = L - 1 if steps is None else max(0, min(steps, L - 1))
    keys = ["baseline"]
    run.evaluate("baseline", "baseline", full_plan(L))
    if method in ("influence", "greedy"):
        bi = block_influence(view, batches)
        for i, v in enumerate(bi):
            keys.append(f"influence block={i}")
            run.note(keys[-1], "influence", block=i, name=view.blocks[i].name, influence=v)
        orders = [("influence-order", "", 0, influence_order(bi))]
        if method == "greedy":
            orders += [("random-order", f" s={s}", s, random_order(L, s)) for s in range(seeds)]
        for kind, suffix, s, seq in orders:
            for k in range(1, last + 1):
                keys.append(f"{kind} k={k}{suffix}")
                run.evaluate(keys[-1], kind, prune_plan(L, seq[:k], f"{kind} {k}{suffix}"), k=k, sample=s)
    if method == "greedy":
        def evaluate(plan: Plan) -> dict:
            removed = [i for op, i in plan.steps if op == DELETE]
            return run.evaluate(f"greedy-try k={len(removed)} removed={'+'.join(map(str, removed))}",
                                "greedy-try", plan, k=len(removed))

        for step in greedy_pruning(view, batches, metric, last, evaluate):
            keys.append(f"greedy k={step['k']}")
            run.evaluate(keys[-1], "greedy", prune_plan(L, step["removed"], f"greedy {step['k']}"), k=step["k"],
                         removed_order=step["removed"])
    elif method == "angular":
        d = angular_distances(view, batches, token)
        for n in range(1, last + 1):
            for l in range(L - n + 1):
                keys.append(f"angular n={n} l={l}")
                run.note(keys[-1], "angular", n=n, l=l, distance=float(d[l, l + n]))
            l = best_span(d, n)
            keys.append(f"angular-prune n={n}")
            run.evaluate(keys[-1], "angular-prune", prune_plan(L, range(l, l + n), f"angular: delete {l}..{l + n - 1}"),
                         k=n, l=l, distance=float(d[l, l + n]))
    elif method == "painters":
        for k in spans or range(1, L - 1):
            for variant in variants:
                for s in range(seeds if variant == "random" else 1):
                    keys.append(f"painters {variant} k={k}" + (f" s={s}" if variant == "random" else ""))
                    run.evaluate(keys[-1], f"painters-{variant}", painters_plan(L, k, variant, s, loops), k=k,
                                 sample=s, variant=variant, span=middle_span(L, k))
    run.bar.close()
    base = store.get("baseline")
    return store.finish(keys, metric=metric.name, baseline={f: base[f] for f in METRIC_FIELDS if f in base})


def layers_main(model_path: str, method: str, *, text: str | None, out: str | None = None, split: str = "layer",
                seq_len: int = 128, batch_size: int = 8, limit: int | None = None, steps: int | None = None,
                seeds: int = 3, spans: Sequence[int] | None = None, variants: Sequence[str] = PAINTERS,
                loops: int | None = None, token: str = "last", device: str = "cpu", force: bool = False,
                figure: bool = True, progress: bool = True) -> Path:
    """`respaths layers`: load a Hugging Face model directory, read the text, run the method."""
    from . import view as make_view
    from .adapters.hf import load
    from .results import ResultStore

    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; use one of {', '.join(METHODS)}.")
    bad = [v for v in variants if v not in PAINTERS]
    if bad:
        raise UserError(f"unknown painters variant {bad[0]!r}; use some of {', '.join(PAINTERS)}.")
    if text is None:
        raise UserError("give the text to measure on with --text FILE (a UTF-8 text file).")
    if seq_len < 2 or batch_size < 1:
        raise UserError("--seq-len must be at least 2 and --batch-size at least 1.")
    model, tokenizer = load(model_path)
    model.to(device)
    v = make_view(model, split=split)
    if method == "painters":
        for k in spans or []:
            middle_span(len(v), k)  # a bad span is an error before any file is written
    batches = read_text(text, v, tokenizer, seq_len, batch_size, limit)
    metric = metric_for(v, batches)
    meta = {"command": "layers", "method": method, "model": str(Path(model_path).resolve()),
            "model_class": type(model).__name__, "split": split, "blocks": len(v),
            "block_names": [b.name for b in v.blocks], "metric": metric.name,
            "text": {"path": str(Path(text).resolve()), "sha256": file_digest(text)},
            "seq_len": seq_len, "batch_size": batch_size, "limit": limit, "steps": steps, "seeds": seeds,
            "spans": list(spans) if spans else None, "variants": list(variants), "loops": loops, "token": token,
            "dtype": "float32"}
    store = ResultStore(out or f"runs/layers-{method}", meta, force=force)
    path = run_layers(v, batches, method, store, metric=metric, steps=steps, seeds=seeds, spans=spans,
                      variants=variants, loops=loops, token=token, progress=progress)
    if figure:
        from .figures import save
        from .layer_figures import plot
        save(plot(json.loads(path.read_text())), path.with_suffix(""))  # PREFIX.png and PREFIX.svg
    return path
