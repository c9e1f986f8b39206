"""respaths: residual networks seen as ensembles of paths (Veit, Wilber & Belongie, NIPS 2016)."""
from .version import __version__
from .core import Block, Plan, ResidualView, delete_blocks, full_plan, reorder_blocks, run_plan
from .adapters import view
from .adapters.declared import declare
from .models import build_model, list_models
from .opening import load_pruned
from .prune import prune, save_pruned


__all__ = ["Block", "Plan", "ResidualView", "build_model", "declare", "delete_blocks", "full_plan",
           "list_models", "load_pruned", "prune", "reorder_blocks", "run_plan", "save_pruned", "view", "__version__"]
