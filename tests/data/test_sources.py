"""Datasets (respaths.data.sources): Fashion-MNIST, CIFAR-10, image folders and synthetic data read
whole and safely, with clear errors."""
import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from respaths.data import sources
from respaths.core import UserError
from respaths.data import load_dataset, normalize


FASHION = Path("/usr/share/datasets/fashion-mnist")


def fashion_available() -> bool:
    try:
        sources.find_fashion_mnist(allow_download=False)
        return True
    except UserError:
        return False


@pytest.mark.skipif(not fashion_available(), reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_is_read_whole_and_correct():
    train = load_dataset("fashion-mnist", split="train")
    test = load_dataset("fashion-mnist", split="test")
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28) and test.labels.dtype == torch.int64
    assert train.labels.bincount().tolist() == [6000] * 10 and test.labels.bincount().tolist() == [1000] * 10
    assert train.labels[:5].tolist() == [9, 0, 0, 3, 0]  # the official file's first labels
    # the recorded normalisation really standardises the training images
    x = normalize(train.images[:20000], train.mean, train.std)
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    assert len(load_dataset("fashion-mnist", split="test", limit=100)) == 100


def test_synthetic_is_deterministic_and_learnable_shape():
    a, b = load_dataset("synthetic", split="train"), load_dataset("synthetic", split="train")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (1024, 3, 16, 16) and a.num_classes == 10
    t = load_dataset("synthetic", split="test")
    assert len(t) == 256 and not torch.equal(t.images[:10], a.images[:10])


def test_missing_fashion_mnist_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "search_roots", lambda data_dir=None: [tmp_path])
    with pytest.raises(UserError, match=f"not found .*{tmp_path}.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", split="train", download=False)
    monkeypatch.setenv("RESPATHS_NO_DOWNLOAD", "1")
    with pytest.raises(UserError, match="downloading it failed"):
        load_dataset("fashion-mnist", split="train")


def test_malformed_idx_file_is_one_clear_error(tmp_path):
    for name in sources.FASHION_FILES:
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"not an idx file at all")
    with pytest.raises(UserError, match="is not an IDX file"):
        load_dataset("fashion-mnist", data_dir=tmp_path, split="test")


def test_download_verifies_checksum(tmp_path):
    src = tmp_path / "file.bin"
    src.write_bytes(b"some bytes")
    with pytest.raises(OSError, match="not the official"):
        sources.download([src.as_uri()], tmp_path / "got.bin", "0" * 32)
    assert not (tmp_path / "got.bin").exists() and not list(tmp_path.glob("got.bin.*"))
    md5 = sources._md5(src)
    assert sources.download([src.as_uri()], tmp_path / "got.bin", md5).read_bytes() == b"some bytes"


def write_cifar10(root: Path, n: int = 6) -> np.ndarray:
    """A tiny CIFAR-10 in the official python layout (Python 3 pickles with bytes keys)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (6, n, 3072), dtype=np.uint8)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        with open(d / name, "wb") as f:
            pickle.dump({b"data": arrays[k], b"labels": [(k + i) % 10 for i in range(n)]}, f, protocol=2)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f, protocol=2)
    return arrays


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def test_cifar_is_read_from_the_official_format_and_safely(tmp_path):
    arrays = write_cifar10(tmp_path)
    train = load_dataset("cifar10", data_dir=tmp_path, split="train")
    test = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py", split="test")
    assert train.images.shape == (30, 3, 32, 32) and len(test) == 6 and train.classes[3] == "c3"
    # official layout: 1024 red values, then green, then blue, row by row
    assert torch.equal(train.images[7], torch.from_numpy(arrays[1, 1].reshape(3, 32, 32)))
    assert train.labels[:7].tolist() == [0, 1, 2, 3, 4, 5, 1]
    # a pickle that would run code is refused before it runs
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(str(tmp_path / "pwned")), "labels": [0]}, f)
    with pytest.raises(UserError, match="not an official CIFAR python file"):
        load_dataset("cifar10", data_dir=tmp_path, split="test")
    assert not (tmp_path / "pwned").exists()


def test_imagefolder_resizes_and_centre_crops(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for c, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / "val" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (300 + 40 * i, 260), colour).save(tmp_path / "val" / c / f"{i}.png")
    ds = load_dataset(f"imagefolder:{tmp_path}", split="test")
    assert ds.images.shape == (4, 3, 224, 224) and ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.classes == ["cat", "dog"] and ds.images[0, 0].float().mean() == 255 and ds.images[3, 2].min() == 255
    assert load_dataset(f"imagefolder:{tmp_path}", split="test", limit=2).labels.tolist() == [0, 1]
    with pytest.raises(UserError, match="no images were found"):
        load_dataset(f"imagefolder:{tmp_path / 'nothing'}")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(UserError, match="known datasets: fashion-mnist, cifar10"):
        load_dataset("mnist")
