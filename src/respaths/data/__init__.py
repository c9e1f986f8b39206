"""Data: datasets by name (sources), their batches and augmentation (batches), text windows for Hugging
Face models (text).

The names of each module are importable from here too.
"""
from .sources import (  # noqa: F401
    CIFAR,
    CIFAR100_STATS,
    CIFAR10_STATS,
    CIFAR_URL,
    DATASETS,
    Dataset,
    FASHION_CLASSES,
    FASHION_FILES,
    FASHION_HOW,
    FASHION_MIRRORS,
    FASHION_MNIST_STATS,
    IMAGENET_STATS,
    IMAGE_EXTENSIONS,
    download,
    download_root,
    find_cifar,
    find_fashion_mnist,
    load_cifar,
    load_dataset,
    load_fashion_mnist,
    load_imagefolder,
    load_synthetic,
    read_cifar_file,
    read_idx,
    search_roots)
from .batches import (  # noqa: F401
    batches,
    crop_and_flip,
    draw_augmentation,
    epoch_order,
    normalize)
