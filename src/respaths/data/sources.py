"""Datasets held whole in memory as uint8 tensors, and batches made from them on the training device.

    ds = load_dataset("fashion-mnist", split="train")     # ds.images uint8 [N, C, H, W], ds.labels int64 [N]
    for x, y in batches(ds, 128, "cuda", train=True, augment=True, generator=g): ...

Why this way: a 2-core CPU cannot afford a DataLoader that builds every image through a chain of
per-image Python transforms, and a GPU should not wait on one. So a dataset is a single uint8 tensor;
a batch is one index into it, and the standard CIFAR augmentation (random crop from the image padded
with 4 zero pixels on each side, then a horizontal flip with probability 1/2) is one gather on the
device. The random numbers come from a CPU `torch.Generator`, so they are the same on every device,
and saving the generator's state is all that resuming needs.

Names: fashion-mnist, cifar10, cifar100, imagefolder:PATH, synthetic. A dataset is looked for in
--data-dir, then $RESPATHS_DATA, then ./data, then ~/.cache/respaths, then /usr/share/datasets
(Debian's dataset-fashion-mnist); fashion-mnist and CIFAR are downloaded from their official
mirrors, checksums verified, when they are nowhere to be found and the machine is online.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import UserError


DATASETS = ["fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH", "synthetic"]

# Per-channel mean and standard deviation of the training images, in [0, 1] units.
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class Dataset:
    """A whole split in memory: images uint8 [N, C, H, W], labels int64 [N]."""

    name: str
    split: str
    images: Tensor
    labels: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] = field(default_factory=list)
    source: str = ""  # where it was read from

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])

    def to(self, device: torch.device | str) -> "Dataset":
        """The same dataset with its tensors on `device` (done once, so that batches never copy it)."""
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def take(self, limit: int | None) -> "Dataset":
        """The first `limit` examples (the official files are already in a shuffled order)."""
        if limit is None or limit >= len(self):
            return self
        if limit < 1:
            raise UserError(f"a dataset limit must be at least 1, not {limit}.")
        return replace(self, images=self.images[:limit].clone(), labels=self.labels[:limit].clone())

    def info(self) -> dict:
        """What a checkpoint records about the data a model was trained on."""
        return {"name": self.name, "num_classes": self.num_classes, "in_channels": self.in_channels,
                "image_size": list(self.image_size), "mean": list(self.mean), "std": list(self.std)}


# ---------------------------------------------------------------------------------------------
# Where datasets are looked for, and downloads


def search_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    roots = [data_dir, os.environ.get("RESPATHS_DATA"), "data", Path.home() / ".cache" / "respaths",
             "/usr/share/datasets"]
    return [Path(r).expanduser() for r in roots if r]


def download_root(data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir or os.environ.get("RESPATHS_DATA") or Path.home() / ".cache" / "respaths").expanduser()


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(urls: list[str], dest: Path, md5: str) -> Path:
    """Fetch dest from the first url that works, verify its MD5, and move it into place atomically.

    Raises OSError with the reason when no url works (offline) or every copy fails verification."""
    if os.environ.get("RESPATHS_NO_DOWNLOAD"):
        raise OSError("downloads are switched off by $RESPATHS_NO_DOWNLOAD")
    dest.parent.mkdir(parents=True, exist_ok=True)
    reason = "no mirror given"
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=30) as r:
                shutil.copyfileobj(r, f)
            got = _md5(Path(tmp))
            if got != md5:
                reason = f"{url} gave a file with MD5 {got}, not the official {md5}"
                continue
            os.replace(tmp, dest)
            return dest
        except OSError as e:  # URLError is an OSError
            reason = f"{url}: {getattr(e, 'reason', e)}"
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise OSError(reason)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST: four IDX files

FASHION_FILES = {  # name -> official MD5 of the .gz (Debian's copies are recompressed: contents checked instead)
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MIRRORS = ["https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
                   "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
FASHION_HOW = ("install it with `apt-get install dataset-fashion-mnist`, or put the four official IDX .gz files "
               "(train-images-idx3-ubyte.gz, ...) in a directory given by --data-dir or $RESPATHS_DATA")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (gzip or plain) of unsigned bytes with `ndim` dimensions."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path} is not a readable IDX file ({e}); replace it with the official file.") from None
    head = 4 + 4 * ndim
    if len(raw) < head or raw[:4] != bytes([0, 0, 8, ndim]):
        raise UserError(f"{path} is not an IDX file of unsigned bytes with {ndim} dimensions; "
                        f"replace it with the official file.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - head != int(np.prod(shape)):
        raise UserError(f"{path} holds {len(raw) - head} bytes of data where its header promises {shape}; "
                        f"it is truncated or damaged, replace it with the official file.")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape)


def find_fashion_mnist(data_dir=None, allow_download: bool = True) -> Path:
    names = list(FASHION_FILES)
    roots = search_roots(data_dir)
    for root in roots:
        for d in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw"):
            if all((d / n).exists() or (d / n[:-3]).exists() for n in names):
                return d
    target = download_root(data_dir) / "fashion-mnist"
    if allow_download:
        try:
            for n, md5 in FASHION_FILES.items():
                if not (target / n).exists():
                    download([m + n for m in FASHION_MIRRORS], target / n, md5)
            return target
        except OSError as e:
            tried = f"; downloading it failed ({e})"
    else:
        tried = ""
    raise UserError(f"Fashion-MNIST was not found (looked for its four IDX files in "
                    f"{', '.join(str(r) for r in roots)} and their fashion-mnist/ folders){tried}; {FASHION_HOW}.")


def load_fashion_mnist(split: str, data_dir=None, allow_download: bool = True) -> Dataset:
    d = find_fashion_mnist(data_dir, allow_download)
    prefix = "train" if split == "train" else "t10k"

    def path(n: str) -> Path:
        p = d / n
        return p if p.exists() else d / n[:-3]

    images = read_idx(path(f"{prefix}-images-idx3-ubyte.gz"), 3)
    labels = read_idx(path(f"{prefix}-labels-idx1-ubyte.gz"), 1)
    if len(images) != len(labels) or images.shape[1:] != (28, 28) or labels.max(initial=0) > 9:
        raise UserError(f"the Fashion-MNIST files in {d} do not fit together (images {images.shape}, "
                        f"labels {labels.shape}); {FASHION_HOW}.")
    return Dataset("fashion-mnist", split, torch.from_numpy(images.copy()).unsqueeze(1),
                   torch.from_numpy(labels.astype(np.int64)), 10, *FASHION_MNIST_STATS,
                   classes=list(FASHION_CLASSES), source=str(d))


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: the official python format


CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
                    md5="c58f30108f718f92721af3b95e74349a", classes=10, stats=CIFAR10_STATS,
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    meta="batches.meta", label_key="labels", names_key="label_names"),
    "cifar100": dict(folder="cifar-100-python", archive="cifar-100-python.tar.gz",
                     md5="eb9058c3a382ffc7106e4002c42a8d85", classes=100, stats=CIFAR100_STATS,
                     train=["train"], test=["test"], meta="meta", label_key="fine_labels",
                     names_key="fine_label_names"),
}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"


class _CifarUnpickler(pickle.Unpickler):
    """The official CIFAR files are pickled dicts of plain data plus one numpy array. They are data,
    not code, and this unpickler makes sure of it: it refuses every global except those numpy needs
    to rebuild an array (and _codecs.encode, which Python 3 protocol-2 pickles use for raw bytes),
    so a tampered file cannot run anything."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        return super().find_class(module, name)


def read_cifar_file(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, ModuleNotFoundError) as e:
        raise UserError(f"{path} is not an official CIFAR python file ({e}); "
                        f"replace it with the file from the official archive.") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not an official CIFAR python file (it holds no dict); "
                        f"replace it with the file from the official archive.")
    # Python 2 pickles give str keys with encoding="latin1", Python 3 ones bytes: accept both.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def find_cifar(name: str, data_dir=None, allow_download: bool = True) -> Path:
    spec = CIFAR[name]
    places = [root / spec["folder"] for root in search_roots(data_dir)]
    candidates = places + ([Path(data_dir).expanduser()] if data_dir else [])  # --data-dir may be the folder
    for d in candidates:
        if all((d / f).exists() for f in spec["train"] + spec["test"]):
            return d
    root = download_root(data_dir)
    how = (f"download {CIFAR_URL}{spec['archive']} and extract it into a directory given by --data-dir "
           f"or $RESPATHS_DATA")
    tried = ""
    if allow_download:
        try:
            archive = download([CIFAR_URL + spec["archive"]], root / spec["archive"], spec["md5"])
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
            archive.unlink()
            return root / spec["folder"]
        except (OSError, tarfile.TarError) as e:
            tried = f"; downloading it failed ({e})"
    raise UserError(f"{name} was not found (looked for {', '.join(str(p) for p in places)}){tried}; {how}.")


def load_cifar(name: str, split: str, data_dir=None, allow_download: bool = True) -> Dataset:
    spec = CIFAR[name]
    d = find_cifar(name, data_dir, allow_download)
    images, labels = [], []
    for f in spec["train" if split == "train" else "test"]:
        part = read_cifar_file(d / f)
        try:
            data = np.asarray(part["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            lab = np.asarray(part[spec["label_key"]], dtype=np.int64)
        except (KeyError, ValueError) as e:
            raise UserError(f"{d / f} is not an official {name} batch (no usable {e}); "
                            f"replace it with the file from the official archive.") from None
        if len(data) != len(lab) or lab.min(initial=0) < 0 or lab.max(initial=0) >= spec["classes"]:
            raise UserError(f"{d / f} has {len(data)} images but {len(lab)} labels, or labels outside "
                            f"0..{spec['classes'] - 1}; replace it with the file from the official archive.")
        images.append(data)
        labels.append(lab)
    classes: list[str] = []
    if (d / spec["meta"]).exists():
        names = read_cifar_file(d / spec["meta"]).get(spec["names_key"], [])
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return Dataset(name, split, torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)),
                   spec["classes"], *spec["stats"], classes=classes, source=str(d))


# ---------------------------------------------------------------------------------------------
# An ImageNet-style folder: PATH/<class>/<image>, or PATH/train|val/<class>/<image>

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def load_imagefolder(path: str, split: str, resize: int = 256, crop: int = 224, limit: int | None = None) -> Dataset:
    """Each image resized so its shorter side is `resize`, then centre-cropped to `crop` x `crop`."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError("reading an image folder needs Pillow; install it with `pip install respaths[vision]`.") from None
    from tqdm import tqdm

    root = Path(path).expanduser()
    subdirs = ["train"] if split == "train" else ["val", "test", "validation"]
    base = next((root / s for s in subdirs if (root / s).is_dir()), root)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    files = [(f, k) for k, c in enumerate(classes) for f in sorted((base / c).rglob("*"))
             if f.suffix.lower() in IMAGE_EXTENSIONS]
    found = {k for _, k in files}
    empty = [c for k, c in enumerate(classes) if k not in found] if files else []
    if empty:
        raise UserError(f"the class folder {base / empty[0]} holds no images (.jpg/.png); put its images in it, "
                        f"or point imagefolder:PATH at a folder whose every class folder has some.")
    if not files:
        raise UserError(f"no images were found in {base} (looked for class subfolders holding .jpg/.png files, "
                        f"optionally under train/ and val/); point imagefolder:PATH at an ImageNet-style folder.")
    if limit and limit < len(files):  # evenly spaced, so that a subset still has every class
        files = [files[i * len(files) // limit] for i in range(limit)]
    images = torch.empty(len(files), 3, crop, crop, dtype=torch.uint8)
    for i, (f, _) in enumerate(tqdm(files, desc=f"reading {base.name}", unit="img", disable=None)):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                scale = resize / min(im.size)
                im = im.resize((max(crop, round(im.width * scale)), max(crop, round(im.height * scale))),
                               Image.BILINEAR)
                left, top = (im.width - crop) // 2, (im.height - crop) // 2
                im = im.crop((left, top, left + crop, top + crop))
        except OSError as e:
            raise UserError(f"{f} is not a readable image ({e}); remove it from the folder.") from None
        images[i] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
    labels = torch.tensor([k for _, k in files], dtype=torch.int64)
    return Dataset(f"imagefolder:{path}", split, images, labels, len(classes), *IMAGENET_STATS,
                   classes=classes, source=str(base))


# ---------------------------------------------------------------------------------------------
# A tiny synthetic dataset, for tests only


def load_synthetic(split: str, n: int | None = None) -> Dataset:
    """10 classes of 3x16x16 images, each a class template (smooth random pattern) plus noise.

    Learnable in a few steps, deterministic, and needs no files: 1024 train and 256 test images."""
    n = n or (1024 if split == "train" else 256)
    g = torch.Generator().manual_seed(0)
    templates = F.interpolate(torch.rand(10, 3, 4, 4, generator=g), size=16, mode="bilinear", align_corners=False)
    g.manual_seed(1 if split == "train" else 2)
    labels = torch.randint(0, 10, (n,), generator=g)
    x = 0.7 * templates[labels] + 0.3 * torch.rand(n, 3, 16, 16, generator=g)
    images = (x * 255).round().clamp(0, 255).to(torch.uint8)
    mean = tuple(float(v) for v in (templates.mean((0, 2, 3)) * 0.7 + 0.15))
    return Dataset("synthetic", split, images, labels, 10, mean, (0.25, 0.25, 0.25),
                   classes=[f"class {k}" for k in range(10)], source="generated")


# ---------------------------------------------------------------------------------------------


# Each loader: f(name, split, data_dir, download, limit, image_size) -> the split, at most `limit` examples.

def _fashion_mnist(name, split, data_dir, download, limit, image_size) -> Dataset:
    return load_fashion_mnist(split, data_dir, download).take(limit)


def _cifar(name, split, data_dir, download, limit, image_size) -> Dataset:
    return load_cifar(name, split, data_dir, download).take(limit)


def _imagefolder(name, split, data_dir, download, limit, image_size) -> Dataset:
    resize, crop = image_size or (256, 224)
    if not 1 <= crop <= resize:
        raise UserError(f"an image size of resize {resize}, crop {crop} cannot be cut; give a crop no larger "
                        f"than the resize, e.g. 36,32.")
    return load_imagefolder(name.split(":", 1)[1], split, resize=resize, crop=crop, limit=limit)  # reads `limit` only


def _synthetic(name, split, data_dir, download, limit, image_size) -> Dataset:
    return load_synthetic(split).take(limit)


# a dataset's name, or a prefix ending in ':' (the rest of the name is a path) -> its loader
LOADERS = {"fashion-mnist": _fashion_mnist, **{cifar: _cifar for cifar in CIFAR}, "imagefolder:": _imagefolder,
           "synthetic": _synthetic}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, split: str = "test",
                 limit: int | None = None, *, download: bool = True,
                 image_size: tuple[int, int] | None = None) -> Dataset:
    """Load a whole split of a dataset by name into memory (see DATASETS).

    image_size: (resize, crop) for an image folder: the shorter side resized, then a centre crop
    (default 256, 224, ImageNet's evaluation); the other datasets have their own fixed size."""
    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', not {split!r}.")
    prefix, colon, _ = name.partition(":")
    loader = LOADERS.get(prefix + ":") if colon else LOADERS.get(name)
    if loader is None:
        raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}.")
    return loader(name, split, data_dir, download, limit, image_size)
