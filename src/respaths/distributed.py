"""Running on many processes with PyTorch's own torch.distributed, as launched by torchrun.

    torchrun --nproc_per_node=2 -m respaths lesion runs/r20/checkpoint       # 2 processes, one file

Outside torchrun (no WORLD_SIZE in the environment, or WORLD_SIZE=1) every function here is the
one-process no-op, so the rest of respaths calls them unconditionally.

  init()                 join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK,
                         MASTER_ADDR/PORT): gloo for CPU tensors, plus NCCL for CUDA ones on a GPU machine;
  rank(), world(), is_main(), local_device(d)   who am I, and which GPU is mine;
  shard(items)           this rank's share: item i goes to rank i % world;
  split(items, weights)  one contiguous run of items per rank, of about equal total weight;
  gather(obj), broadcast(obj)   picklable objects between ranks (our own ranks' results: plain data);
  on_main(fn)            run fn on rank 0 only, and fail on every rank if it failed there;
  check_same(what, ts)   fail on every rank unless all ranks hold the same tensors (the model's weights);
  unfinished(store, keys)   the sweep's tasks not done yet, as rank 0 (which alone opens the file) reads them.

Sweeps (respaths.experiments.lesion.run_experiment, respaths.paths.measure_path_gradients) are
written once for any number of processes: every rank builds the same list of tasks (plans, path
lengths) from the same seeds and takes its share (split, shard); rank 0 alone opens the result file,
says which tasks are unfinished, and appends what all ranks computed (gather), so the file is the one
a single process writes and a killed run resumes with any number of ranks.
Training: respaths.training.ddp's DistributedTrainer uses `rank_batches` below with DistributedDataParallel.
"""
from __future__ import annotations

import atexit
import hashlib
import os
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from .core import UserError
from .data.batches import crop_and_flip, draw_augmentation, epoch_order, normalize

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# The process group


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> int:
    """Join torchrun's process group, once; returns the number of processes (1 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    if not launched():
        return 1
    if not dist.is_available():
        raise UserError("this build of torch has no torch.distributed; run without torchrun, or install a "
                        "torch built with distributed support.")
    backend = "gloo"
    if torch.cuda.is_available():
        # NCCL for CUDA tensors (gradients), gloo for the CPU ones (gathered result records)
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend)  # env:// : RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from torchrun
    atexit.register(shutdown)
    return dist.get_world_size()


def shutdown() -> None:
    """Leave the process group together: gloo aborts a process ("terminate called without an active
    exception") whose peer closes the connection while it is still tearing its own down. A rank that
    failed alone waits at most a minute here, then leaves anyway."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        except Exception:  # a rank gone or stuck: leave anyway, as before
            pass
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_device(device: str | torch.device) -> torch.device:
    """Under torchrun, a bare "cuda" means this process's own GPU, cuda:LOCAL_RANK."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", local_rank() % max(torch.cuda.device_count(), 1))
    return device


def barrier() -> None:
    if active():
        dist.barrier()


# ---------------------------------------------------------------------------------------------
# Splitting work and collecting results


def shard(items: Sequence[T], of_rank: int | None = None, ranks: int | None = None) -> list[T]:
    """The items rank `of_rank` (default: this one) takes: item i goes to rank i % ranks.

    Interleaving balances sweeps whose cost drifts along the list (plans sorted by their steps)."""
    r = rank() if of_rank is None else of_rank
    w = world() if ranks is None else ranks
    return list(items[r::w])


def gather(obj: Any) -> list[Any]:
    """Every rank's obj, in rank order, on every rank (pickled: use for our own ranks' plain results)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank src's obj on every rank."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _reason(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, (UserError, ValueError, FileNotFoundError)) and e.args else None
    return str(msg) if msg is not None else f"{type(e).__name__}: {e}"


def on_main(fn: Callable[[], T]) -> T | None:
    """fn() on rank 0 (its value returned there, None elsewhere). If it raises, every rank raises:
    rank 0 the original exception, the others a UserError with its message, instead of waiting
    forever for a rank that has stopped."""
    if not active():
        return fn()
    return _fail_together(fn, is_main(), lambda error: [(0, broadcast(error))])


def all_ok(fn: Callable[[], T]) -> T:
    """fn() on every rank; if it raises on any rank, every rank raises (see on_main)."""
    if not active():
        return fn()
    return _fail_together(fn, True, lambda error: enumerate(gather(error)))


def _fail_together(fn: Callable[[], T], runs_here: bool,
                   exchange: Callable[[str | None], Iterable[tuple[int, str | None]]]) -> T | None:
    """fn() where runs_here; exchange shares this rank's error (or None) and returns (rank, error)
    pairs: a rank whose fn raised raises the original, the others a UserError naming the first failure."""
    value, error, failure = None, None, None
    if runs_here:
        try:
            value = fn()
        except Exception as e:
            error, failure = _reason(e), e
    reported = list(exchange(error))
    if failure is not None:
        raise failure
    bad = next(((r, e) for r, e in reported if e is not None), None)
    if bad is not None:
        raise UserError(f"rank {bad[0]} stopped: {bad[1]}")
    return value


def check_same(what: str, tensors: Iterable[Tensor]) -> None:
    """Raise on every rank unless all ranks hold the same tensors (compared by a digest of their bytes).

    A sweep split across ranks is only one experiment if every rank evaluates the same model: a
    model built with fresh random weights in each process would silently mix several."""
    if not active():
        return
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    if len(set(gather(digest.hexdigest()))) > 1:
        raise UserError(f"the {world()} ranks hold different {what}; under torchrun every rank must load the same "
                        f"weights (a checkpoint, or --weights), not a fresh random initialisation of its own.")


def unfinished(store: Any, keys: Sequence[str]) -> list[str]:
    """The keys not yet done in the ResultStore, as rank 0 (which alone opens it) reads them, on every rank."""
    return broadcast([k for k in keys if store is None or not store.done(k)] if is_main() else None)


def split(items: Sequence[T], weights: Sequence[float] | None = None, ranks: int | None = None) -> list[list[T]]:
    """items cut into one contiguous run per rank, of about equal total weight (default: count).

    Item i goes to the rank whose share of the total holds the weight before it, so the runs are
    contiguous, rank 0's starts with the first item, and every rank computes the same runs (plain
    arithmetic on the same numbers)."""
    w = world() if ranks is None else ranks
    weights = [1.0] * len(items) if weights is None else [float(x) for x in weights]
    total = sum(weights) or 1.0
    runs: list[list[T]] = [[] for _ in range(w)]
    before = 0.0
    for item, weight in zip(items, weights):
        runs[min(w - 1, int(w * before / total))].append(item)
        before += weight
    return runs


# ---------------------------------------------------------------------------------------------
# Data parallelism: this rank's part of every global batch


def rank_batches(dataset: Any, batch_size: int, device: torch.device | str, *, generator: torch.Generator,
                 augment: bool = False, channels_last: bool = False) -> Iterator[tuple[Tensor, Tensor, int]]:
    """One training epoch as (x, y, n): this rank's part of each global batch of `batch_size`
    examples, and n, the global batch's size.

    Every rank draws the same epoch order and, per global batch, the same augmentation for the
    whole batch from `generator`, in the sequence respaths.data.batches draws them for one process,
    then keeps its own slice (torch.tensor_split: sizes differ by at most one). So each example is
    seen and augmented as in a one-process run, and the generator ends the epoch in the same state
    whatever the number of ranks: a checkpoint resumes on any number. A last global batch with
    fewer examples than ranks is skipped (its augmentation still drawn)."""
    device = torch.device(device)
    images, labels = dataset.images.to(device), dataset.labels.to(device)
    order = epoch_order(len(labels), generator)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        params = draw_augmentation(len(idx), 4, generator) if augment else None
        if len(idx) < world():
            continue
        part = torch.tensor_split(torch.arange(len(idx)), world())[rank()]
        x = images[idx[part].to(device)]
        if augment:
            x = crop_and_flip(x, params[part])
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
        yield normalize(x, dataset.mean, dataset.std), labels[idx[part].to(device)], len(idx)


def all_sum(*values: Tensor) -> list[Tensor]:
    """Element-wise sums over ranks of scalar tensors (one collective for all of them)."""
    if not active():
        return list(values)
    flat = torch.stack([v.detach().double().reshape(()) for v in values])  # exact for counts
    dist.all_reduce(flat)  # gloo on CPU, NCCL on CUDA
    return [flat[i].to(v.dtype) for i, v in enumerate(values)]
