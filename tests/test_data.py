import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from respaths import data
from respaths.data import sources
from respaths.core import UserError
from respaths.data import batches, crop_and_flip, draw_augmentation, load_dataset, normalize

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


def test_crop_and_flip_equals_the_per_image_torchvision_pipeline():
    tf = pytest.importorskip("torchvision.transforms.functional")
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (16, 3, 12, 10), dtype=torch.uint8, generator=g)
    params = draw_augmentation(16, 4, g)
    assert params[:, :2].min() >= 0 and params[:, :2].max() <= 8 and set(params[:, 2].tolist()) <= {0, 1}
    out = crop_and_flip(x, params)
    for i in range(16):
        dy, dx, flip = params[i].tolist()
        ref = tf.crop(tf.pad(x[i], [4]), dy, dx, 12, 10)  # RandomCrop(padding=4) ...
        if flip:
            ref = tf.hflip(ref)  # ... then RandomHorizontalFlip
        assert torch.equal(out[i], ref), i


def test_augmented_batches_are_seeded_and_cover_every_example_once():
    ds = load_dataset("synthetic", split="test")

    def epoch(seed):
        g = torch.Generator().manual_seed(seed)
        return list(batches(ds, 100, train=True, augment=True, generator=g, channels_last=True))

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    assert [len(y) for _, y in a] == [100, 100, 56]
    assert a[0][0].dtype == torch.float32 and a[0][0].is_contiguous(memory_format=torch.channels_last)
    # shuffled, but a permutation of the labels
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(ds.labels.tolist())


def test_eval_batches_are_in_order_and_normalised():
    ds = load_dataset("synthetic", split="test")
    xs, ys = zip(*batches(ds, 64))
    assert torch.equal(torch.cat(ys), ds.labels)
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    assert torch.allclose(torch.cat(xs), (ds.images.float() / 255 - mean) / std, atol=1e-5)


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
