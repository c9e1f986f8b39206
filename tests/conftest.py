"""Fixtures every test file shares."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.published import MAKE, WEIGHTS


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread: the test models are tiny and the machine's 2 cores are shared, so a second
    OpenMP thread only waits for the first (10-30x slower when the box is busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"no published weights at {WEIGHTS}")
    env = os.environ.get("RESPATHS_DATA")
    if env and (Path(env) / "cifar-10-batches-py").is_dir():
        return Path(env)
    cache = tmp_path_factory.mktemp("cifar10-jpeg")  # make_cifar10.py takes ~15 s
    if not (cache / "cifar-10-batches-py" / "test_batch").is_file():
        if not MAKE.is_file():
            pytest.skip("no CIFAR-10 under $RESPATHS_DATA and no shared/datasets/make_cifar10.py to write it")
        subprocess.run([sys.executable, str(MAKE), str(cache)], check=True, capture_output=True)
    return cache
