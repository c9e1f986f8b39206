"""Text as the batches a Hugging Face model reads: lists of dicts of tensors, so that every plan of an
experiment sees exactly the same tokens.

  read_text(path, view, tokenizer, seq_len, batch_size)   a decoder reads the file as one stream of tokens
                                                          cut into windows; an encoder one example per line
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..core import ResidualView, UserError
from ..metrics import Batch


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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:  # replacement characters would be measured as if they were the text
        raise UserError(f"{path} is not UTF-8 text (byte {e.start} cannot be decoded); convert it, e.g. with "
                        f"iconv -t UTF-8, and try again.") from None
    if getattr(view, "task", "") == "causal-lm":
        # one stream, cut into windows below: its length over the model's maximum is expected, so not warned about
        ids = torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)
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
