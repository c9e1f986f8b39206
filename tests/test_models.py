"""The paper's nets (respaths.models): stochastic depth and fixed m."""
import pytest
import torch

import respaths


def test_stochastic_depth_survival_and_fixed_m():
    m = respaths.build_model("preresnet110", stochastic_depth=0.5)
    s = [b.survival for b in m.residual_blocks]
    assert len(s) == 54 and s[-1] == pytest.approx(0.5) and s[0] == pytest.approx(1 - 0.5 / 54)
    f = respaths.build_model("preresnet110", fixed_m=23)
    active = f.draw_active(torch.Generator().manual_seed(1))
    assert int(active.sum()) == 23
