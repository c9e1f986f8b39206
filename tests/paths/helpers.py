"""The path tests' model: a small view with non-trivial BatchNorms, and a batch for it."""
import torch

import respaths


def tiny(name, shortcut="A", dtype=torch.float32, seed=0, **options):
    """A width-0.25 model whose BatchNorms have non-trivial statistics and affine parameters, so that
    every block's Jacobian is not close to the identity's."""
    torch.manual_seed(seed)
    m = respaths.build_model(name, in_channels=3, num_classes=10, width=0.25, shortcut=shortcut, **options)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.3, 0.3)
    m = m.to(dtype).eval()
    x = torch.randn(4, 3, 16, 16, dtype=dtype)
    y = torch.randint(0, 10, (4,))
    return respaths.view(m, x[:1]), x, y
