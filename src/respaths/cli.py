"""The `respaths` command: a thin layer of argparse over the library.

Each subcommand is a pair: `<name>_args(parser)` declares its options, `<name>_run(args)` calls the
library. Bad input raises UserError (or ValueError / FileNotFoundError) with one sentence; main()
prints it and exits 2, never a traceback (set RESPATHS_DEBUG=1 to see one).
"""
from __future__ import annotations

import argparse
import os
import sys

from .core import UserError


# ---------------------------------------------------------------------------------------------
# train / evaluate  (issue: foundation)

def train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name, e.g. preresnet110")


def train_run(args: argparse.Namespace) -> int:
    raise UserError("respaths train is not built yet.")


def evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint directory written by respaths train")


def evaluate_run(args: argparse.Namespace) -> int:
    raise UserError("respaths evaluate is not built yet.")


# ---------------------------------------------------------------------------------------------

COMMANDS = {
    "train": (train_args, train_run, "train a model (SGD, stochastic depth, fixed-m, resumable)"),
    "evaluate": (evaluate_args, evaluate_run, "test error of a checkpoint"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="respaths",
        description="Residual networks as ensembles of paths: train the models of Veit et al. (2016), "
                    "delete and reorder blocks at test time, and measure which paths carry the gradient.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"respaths {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (add_args, run, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_args(p)
        p.set_defaults(func=run)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError, KeyError) as e:
        if os.environ.get("RESPATHS_DEBUG"):
            raise
        msg = e.args[0] if e.args else str(e)
        print(f"respaths {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"respaths {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
