"""Fixtures every test file shares."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread: the test models are tiny and the machine's 2 cores are shared, so a second
    OpenMP thread only waits for the first (10-30x slower when the box is busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
