"""Training throughput: the respaths trainer against a loop written the way most PyTorch CIFAR code is.

    python benchmarks/train_throughput.py                       # resnet110, batch 128, CIFAR-shaped data
    python benchmarks/train_throughput.py --steps 4 --compile --bf16 --model resnet20

The reference (as in e.g. kuangliu/pytorch-cifar): a torch DataLoader (2 workers, shuffled) over a
CIFAR10-like Dataset that turns each uint8 image into a PIL image and runs RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor and Normalize on it; fp32; NCHW; optimizer.zero_grad(), forward,
loss.backward(), optimizer.step().

respaths: the trainer's own epoch loop (Trainer.train_epoch: in-memory uint8 batches, crop and flip as
one gather, lr schedule, stochastic-depth draw, SGD step with set_to_none), measured with the memory
format and precision switched one at a time, so each trick's share is visible. Same model, batch,
data and optimizer; images/s over the timed steps after one warm-up step; ratio to the reference.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from respaths.data import CIFAR10_STATS, Dataset
from respaths.models import build_model
from respaths.training.trainer import Trainer, TrainConfig


def cifar_shaped(n: int, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return Dataset("cifar-shaped", "train", images, labels, 10, *CIFAR10_STATS)


def reference_loader(ds: Dataset, batch_size: int, workers: int):
    """The usual input pipeline: a torchvision-style Dataset with per-image PIL transforms in a DataLoader."""
    import torchvision.transforms as T
    from PIL import Image

    class CIFAR10Like(torch.utils.data.Dataset):  # what torchvision.datasets.CIFAR10 does per item
        def __init__(self, data: np.ndarray, targets: list[int], transform):
            self.data, self.targets, self.transform = data, targets, transform

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.data[i])), self.targets[i]

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(ds.mean, ds.std)])
    data = CIFAR10Like(ds.images.permute(0, 2, 3, 1).numpy(), ds.labels.tolist(), transform)
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers)


def reference(ds: Dataset, model_name: str, batch_size: int, steps: int, workers: int) -> float:
    """images/s of the usual loop: DataLoader + per-image PIL transforms, fp32, NCHW."""
    loader = reference_loader(ds, batch_size, workers)
    torch.manual_seed(0)
    model = build_model(model_name).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    seen, start = 0, None
    for k, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if k == 0:
            start = time.perf_counter()  # after the warm-up step (and the workers' start)
        else:
            seen += len(y)
        if k == steps:
            break
    return seen / (time.perf_counter() - start)


def data_only(ds: Dataset, batch_size: int, workers: int) -> tuple[float, float]:
    """images/s of the two input pipelines alone (augmented, normalised batches; no model)."""
    from respaths.data import batches

    seen, it = 0, iter(reference_loader(ds, batch_size, workers))
    next(it)  # the workers' start
    start = time.perf_counter()
    for x, y in it:
        seen += len(y)
    ref = seen / (time.perf_counter() - start)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    seen = sum(len(y) for _, y in batches(ds, batch_size, "cpu", train=True, augment=True, generator=g,
                                           channels_last=True))
    return ref, seen / (time.perf_counter() - start)


def respaths_trainer(ds: Dataset, model_name: str, batch_size: int, steps: int, **options) -> float:
    """images/s of Trainer.train_epoch over `steps` batches, after a one-batch warm-up epoch."""
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(model=model_name, dataset=ds.name, epochs=2, batch_size=batch_size, out=out,
                          device="cpu", progress=False, quiet=True, **options)
        t = Trainer(cfg, datasets=(ds, ds.take(batch_size)))
        from tqdm import tqdm
        with tqdm(disable=True) as bar:
            t.train_set = ds.take(batch_size)
            t.train_epoch(bar)  # warm-up: first-call allocations, compilation
            t.train_set = ds.take(batch_size * steps)
            return t.train_epoch(bar)["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet110")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (after one warm-up step)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes to compile)")
    p.add_argument("--bf16", action="store_true", help="also measure bf16 autocast (fast only with AVX512-BF16/AMX)")
    p.add_argument("--skip-nchw", action="store_true", help="skip the respaths NCHW variant")
    p.add_argument("--threads", type=int, help="torch CPU threads for every variant (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=1,
                   help="measure every variant this many times, in turn, and keep each one's best "
                        "(fairer on a shared machine)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ds = cifar_shaped(args.batch_size * (args.steps + 1))
    print(f"{args.model}, batch {args.batch_size}, {args.steps} timed steps each, CPU threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}", flush=True)
    variants = []
    if not args.skip_nchw:
        variants.append(("respaths fp32 NCHW (in-memory data, on-device augmentation)", dict(channels_last=False)))
    variants.append(("respaths fp32 channels_last (the CPU default)", dict(channels_last=True)))
    if args.bf16:
        variants.append(("respaths bf16 channels_last", dict(channels_last=True, precision="bf16")))
    if args.compile:
        variants.append(("respaths fp32 channels_last compiled", dict(channels_last=True, compile=True)))

    ref_data, ours_data = data_only(cifar_shaped(20 * args.batch_size), args.batch_size, args.workers)
    print(f"input pipeline alone: reference {ref_data:,.0f} img/s, respaths {ours_data:,.0f} img/s "
          f"({ours_data / ref_data:.0f}x)", flush=True)
    best: dict[str, float] = {}
    for r in range(args.repeats):
        ref = reference(ds, args.model, args.batch_size, args.steps, args.workers)
        best["ref"] = max(best.get("ref", 0.0), ref)
        print(f"[{r + 1}/{args.repeats}] {'reference: DataLoader + per-image transforms, fp32, NCHW':64s} "
              f"{ref:8.1f} img/s   1.00x", flush=True)
        for name, options in variants:
            ips = respaths_trainer(ds, args.model, args.batch_size, args.steps, **options)
            best[name] = max(best.get(name, 0.0), ips)
            print(f"[{r + 1}/{args.repeats}] {name:64s} {ips:8.1f} img/s  {ips / ref:5.2f}x", flush=True)
    if args.repeats > 1:
        print(f"best of {args.repeats}:")
        print(f"{'reference: DataLoader + per-image transforms, fp32, NCHW':70s} {best['ref']:8.1f} img/s   1.00x")
        for name, _ in variants:
            print(f"{name:70s} {best[name]:8.1f} img/s  {best[name] / best['ref']:5.2f}x")


if __name__ == "__main__":
    main()
