"""Batches (respaths.data.batches): on-device augmentation against torchvision, seeded epochs, eval order."""
import pytest
import torch

from respaths.data import batches, crop_and_flip, draw_augmentation, load_dataset


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
