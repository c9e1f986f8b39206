"""Text cut into token batches (respaths.data.text)."""
import torch

from respaths.layers import importance as li
from respaths.data.text import token_batches


def test_token_batches_cut_windows():
    b = token_batches(torch.arange(23), seq_len=5, batch_size=2)
    assert [x["input_ids"].shape for x in b] == [(2, 5), (2, 5), (1, 3)]
    assert torch.equal(torch.cat([x["input_ids"].flatten() for x in b]), torch.arange(23))
