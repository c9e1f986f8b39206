"""What the command line checks after argparse has read each option on its own, before anything is
created, deleted or overwritten: options that do nothing for this model or mode, the environment a
command runs in, and what an --out directory already holds.

The checks raise UserError (one sentence, exit 2). They read files, never write them; `--force` acts
only later, in the command itself, once everything here has passed.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .core import UserError
from .distributed import launched
from .opening import reads_text
from .io.checkpoint import refuse_foreign_checkpoints
from .io.layout import RUN_FILES, RunLayout, training_checkpoint, training_metrics

KIND_OF_COMMAND = {"train": "train", "reproduce": "reproduce", "demo": "reproduce", "study": "study"}
IMAGE_COMMANDS = "respaths evaluate, lesion, reorder, paths, study or prune"


def run_kind(record: Any) -> str | None:
    """The kind of respaths run a run.json records (train, reproduce, study), or None if it is not one."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("settings"), dict) and set(record) == {"settings"}:
        return "train"
    if isinstance(record.get("preset"), dict) and isinstance(record.get("steps"), dict):
        return "study" if record.get("kind") == "study" else "reproduce"
    return None


def read_run_record(out: Path) -> tuple[str | None, Any]:
    """(kind, the record) of out/run.json; kind None when it is not a respaths record."""
    try:
        record = json.loads(RunLayout(out).run_json.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None, None
    return run_kind(record), record


def check_out_dir(command: str, out: str | os.PathLike, force: bool) -> None:
    """Refuse an --out whose contents this command would delete or overwrite but did not write: a file
    where the run directory should be, a run.json that is not respaths', a run of another kind (unless
    --force; demo has none), or respaths' file names taken by something else (even with --force)."""
    kind = KIND_OF_COMMAND[command]
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out} is a file, not a run directory; give a new or run directory to --out.")
    if RunLayout(out).run_json.exists():
        found, record = read_run_record(out)
        if found is None:
            raise UserError(f"{RunLayout(out).run_json} was not written by respaths; move it away or choose another --out "
                            f"(respaths never overwrites files it did not write, even with --force).")
        if found != kind:
            what = "a demo or reproduce" if found == "reproduce" else f"a {found}"
            how = "choose another --out" if command == "demo" else "choose another --out, or pass --force to replace it"
            raise UserError(f"{out} holds {what} run, not a {command} run; {how}.")
        if command == "demo" and record["preset"].get("name") != "quick":
            raise UserError(f"{out} holds a reproduce run of the {record['preset'].get('name')!r} preset, not a demo; "
                            f"choose another --out.")
    elif command == "train" and training_metrics(out).exists() and not training_checkpoint(out).exists():
        raise UserError(f"{training_metrics(out)} was not written by respaths train (there is no checkpoint beside it); "
                        f"move it away or choose another --out.")
    elif command != "train":
        taken = [name for name in RUN_FILES[kind] if (out / name).exists()]
        if taken:
            raise UserError(f"{out} holds {taken[0]} but no run.json, so it is not a respaths run; move it away or "
                            f"choose another --out.")
    if command == "train":
        refuse_foreign_checkpoints(out)


def given(args: argparse.Namespace, name: str) -> bool:
    return getattr(args, name, None) is not None


def check_applies(args: argparse.Namespace) -> None:
    """Refuse options that would do nothing for this model, mode or launch, naming where they apply."""
    command = args.command
    model = getattr(args, "model", None) if command != "train" else None
    # no existence check: a missing .gguf is still a text model, whose loader says it is missing
    hf = bool(model) and reads_text(model)
    if command == "lesion" and args.mode == "single":
        for name in ("k", "samples"):
            if given(args, name):
                raise UserError(f"--{name} applies to --mode random; single deletion deletes each block once.")
    if command == "layers":
        if model and not hf:
            if not Path(model).exists() and ":" not in model:
                raise UserError(f"{model} does not exist; give a Hugging Face model directory (save_pretrained, "
                                f"tokenizer beside it) or a GGUF file.")
            raise UserError(f"respaths layers reads text through a Hugging Face model directory or GGUF file, and "
                            f"{model} is neither; for an image model use {IMAGE_COMMANDS}.")
        only = {"spans": "painters", "variants": "painters", "loops": "painters", "token": "angular",
                "seeds": "greedy and painters"}
        for name, methods in only.items():
            if given(args, name) and args.method not in methods.replace(" and ", " ").split():
                raise UserError(f"--{name} applies to --method {methods}, not {args.method}.")
    text_options = [n for n in ("seq_len", "text_batch_size") if given(args, n)]
    if command == "prune":
        text_options += ["text"] if given(args, "text") else []
    if text_options and model and not hf:
        raise UserError(f"--{text_options[0].replace('_', '-')} applies to Hugging Face model directories read "
                        f"with --text; {model} is an image model.")
    if hf and command in ("evaluate", "lesion", "reorder", "paths", "study", "prune"):
        for name in ("dataset", "data_dir", "normalize", "mean", "std", "image_size", "num_classes", "model_kwargs"):
            if given(args, name):
                raise UserError(f"--{name.replace('_', '-')} applies to image models; the Hugging Face model "
                                f"{model} reads --text.")
    if given(args, "image_size"):
        dataset = getattr(args, "dataset", None)
        if dataset is not None and not dataset.startswith("imagefolder:"):
            raise UserError(f"--image-size applies to imagefolder:PATH datasets, whose images come in any size; "
                            f"{dataset} has one size.")
    if getattr(args, "sync_bn", False):
        if not launched():
            raise UserError("--sync-bn applies to training under torchrun (several processes); one process "
                            "has one batch already.")
    if command == "train" and args.resume and args.force:
        raise UserError("--resume continues the run in --out and --force deletes it; give one of them.")


def default_seq_len(model: str | None, default: int = 128) -> int:
    """--seq-len when not given: 128 tokens, or fewer where the Hugging Face model in `model` has fewer
    positions (its config.json's max_position_embeddings or n_positions)."""
    try:
        config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8")) if model else {}
    except (OSError, ValueError):
        config = {}
    positions = config.get("max_position_embeddings") or config.get("n_positions") if isinstance(config, dict) else None
    return min(default, positions) if isinstance(positions, int) and positions >= 2 else default


def check_launch() -> None:
    """RANK/WORLD_SIZE say several processes, but torchrun did not start this one."""
    world = os.environ.get("WORLD_SIZE", "1")
    try:
        several = int(world) > 1
    except ValueError:
        raise UserError(f"WORLD_SIZE={world!r} is not a number of processes; unset it, or start respaths with "
                        f"torchrun.") from None
    if not several and os.environ.get("RANK", "0") != "0":  # this rank would wait for a rank 0 that never comes
        raise UserError(f"RANK={os.environ['RANK']} is set but WORLD_SIZE is not above 1, so torchrun did not start "
                        f"this process; start it with torchrun, or unset RANK.")
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if several and missing:
        raise UserError(f"WORLD_SIZE={world} says this is one of several processes, but {missing[0]} is not set, so "
                        f"torchrun did not start it; start it with torchrun, or unset WORLD_SIZE and RANK.")
