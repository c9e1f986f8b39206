"""The `respaths` command: a thin layer of argparse over the library.

Each subcommand is a pair: `<name>_args(parser)` declares its options, `<name>_run(args)` calls the
library. Bad input raises UserError with one sentence (OSErrors name the path and reason); main() prints
it and exits 2. Anything else is a bug: traceback, exit 1. RESPATHS_DEBUG=1 re-raises user errors too.
While a command runs it holds the lock of its --out (respaths.io.atomic.output_lock), and when it fails
it removes the directories it created that are still empty.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from .core import UserError


# ---------------------------------------------------------------------------------------------
# Option types: argparse calls these, so bad values stop before any work or file (exit 2, one line).
# Every number is finite and within the range where it means something; each message says what the
# option wants.

MAX_WHOLE = 2**31 - 1  # counts beyond this are typos, and torch's int32 sizes cannot hold them
MAX_SEED = 2**32 - 1   # numpy and torch generators take seeds up to here
MAX_THREADS = 1024


def whole_number(low: int, high: int = MAX_WHOLE, what: str = "a whole number"):
    """An argparse type: an integer from low to high."""
    def parse(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            v = None
        if v is None or not low <= v <= high:
            wanted = f"of {low} or more" if high == MAX_WHOLE else f"from {low:,} to {high:,}"
            raise argparse.ArgumentTypeError(f"expected {what} {wanted}, got {text!r}")
        return v
    parse.__name__ = what
    return parse


def number(low: float, high: float, *, low_open: bool = False, high_open: bool = False, what: str = "a number"):
    """An argparse type: a finite float in the interval low..high (open at an end where said)."""
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        ok = math.isfinite(v) and (low < v if low_open else low <= v) and (v < high if high_open else v <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what} in {lo}{low:g}, {high:g}{hi}, got {text!r}")
        return v
    parse.__name__ = what
    return parse


positive_int = whole_number(1, what="a whole number")
seed_number = whole_number(0, MAX_SEED, what="a seed")
thread_count = whole_number(1, MAX_THREADS, what="a number of threads")
open_unit_float = number(0, 1, low_open=True, high_open=True, what="a share")
learning_rate = number(0, 10, low_open=True, what="a learning rate")
momentum_value = number(0, 1, high_open=True, what="a momentum")
weight_decay_value = number(0, 1, high_open=True, what="a weight decay")
width_multiplier = number(0, 16, low_open=True, what="a width multiplier")
survival_probability = number(0, 1, low_open=True, what="a survival probability p_L")


def channel_values(low: float, high: float, low_open: bool = False):
    """An argparse type: one number per channel (or one for all), each finite and in range; returned as
    given (respaths.opening reads the text), so result files keep what the user wrote."""
    one = number(low, high, low_open=low_open, what="a value per channel")

    def parse(text: str) -> str:
        parts = text.split(",")
        try:
            for part in parts:
                one(part)
        except argparse.ArgumentTypeError:
            lo = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"expected one number per channel in {lo}{low:g}, {high:g}], "
                                             f"separated by commas (e.g. 0.485,0.456,0.406), got {text!r}") from None
        return text
    return parse


channel_means = channel_values(0, 1)
channel_stds = channel_values(0, 1, low_open=True)


def k_values(text: str) -> list[int]:
    """A rising range '1-20' or a list '1,5,10', as the numbers it names: each at least 1, none twice."""
    from .experiments.lesion import parse_k
    try:
        ks = parse_k(text)
    except UserError:
        ks = []
    if not ks or min(ks) < 1 or max(ks) > MAX_WHOLE:
        raise argparse.ArgumentTypeError(f"expected a rising range like 1-20 or a list like 1,5,10 of numbers from 1 "
                                         f"up, got {text!r}")
    if len(set(ks)) != len(ks):
        twice = next(k for k in ks if ks.count(k) > 1)
        raise argparse.ArgumentTypeError(f"{twice} is named twice in {text!r}; name each number once")
    return ks


def k_range(text: str) -> str:
    """As k_values, but returned as given, so result files stay the same."""
    k_values(text)
    return text


def lengths_range(text: str) -> str:
    """Path lengths: all, or at least two of them (the share of one length alone is always 100%)."""
    if text == "all":
        return text
    from .experiments.lesion import parse_k
    try:
        ks = parse_k(text)
    except UserError:
        ks = []
    if len(set(ks)) < 2 or len(set(ks)) != len(ks):
        raise argparse.ArgumentTypeError(f"expected all, or at least two different path lengths as a range like 0-20 "
                                         f"or a list like 1,5,10 (one length alone always carries 100% of what is "
                                         f"measured), got {text!r}")
    return text


def comma_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the comma-separated items, spaces around them dropped; at least one."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected one or more names separated by commas, got {text!r}")
    return items


def model_kwargs(text: str) -> dict:
    """KEY=VALUE,... with each VALUE read as a Python literal where it is one (32, True, 0.1), else a string;
    numbers must be finite."""
    import ast
    out: dict = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise argparse.ArgumentTypeError(f"{text!r}: {item!r} is not KEY=VALUE; give e.g. img_size=32,drop_rate=0.")
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed = value.strip()
        if isinstance(parsed, str) and parsed.lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
            parsed = float(parsed)
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) and not math.isfinite(parsed) \
                or isinstance(parsed, int) and abs(parsed) > 2**63 - 1:
            raise argparse.ArgumentTypeError(f"{key.strip()}={value.strip()} is not a finite number a model can take")
        out[key.strip()] = parsed
    if not out:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE,... (e.g. img_size=32), got {text!r}")
    return out


def out_path(text: str) -> str:
    """An output path: not empty (an empty --out would silently mean the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty one")
    return text


def out_prefix(text: str) -> str:
    """An output prefix (layers writes PREFIX.json): a file name, not a directory."""
    out_path(text)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a prefix inside it, e.g. {text.rstrip('/')}/influence "
                                         f"(writes .json and .csv)")
    return text


def existing_dir(text: str) -> str:
    """A directory that exists (a missing --data-dir would otherwise fall back to another copy, silently)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory, got an empty path")
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist; give the directory the dataset is in")
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory; give the directory the dataset is in")
    return text


def text_file(text: str) -> str:
    """A UTF-8 text file that exists."""
    p = Path(text)
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file; give a UTF-8 text file" if p.exists() else
                                         f"{text} does not exist; give a UTF-8 text file")
    return text


def device_name(text: str) -> str:
    """auto, cpu, cuda, cuda:N or mps, refused here when this machine has no such device."""
    import re

    import torch
    if text in ("auto", "cpu"):
        return text
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m:
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} asked for, but this machine has no CUDA device; use cpu")
        if m[1] is not None and int(m[1]) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r} asked for, but this machine has "
                                             f"{torch.cuda.device_count()} CUDA device(s)")
        return text
    if text == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError("'mps' asked for, but this machine has no MPS device; use cpu")
        return text
    raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps")


def _device_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--device, the same for every command: auto unless told, resolved by resolved_device."""
    p.add_argument("--device", type=device_name, default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")


def resolved_device(args: argparse.Namespace, per_rank: bool = False) -> str:
    """The device --device names (train.pick_device: auto is cuda, then mps, then cpu); per_rank: under
    torchrun, "cuda" is this rank's own GPU."""
    from .training.trainer import pick_device
    device = pick_device(args.device)
    if per_rank:
        from .distributed import local_device
        device = local_device(device)
    return str(device)



# ---------------------------------------------------------------------------------------------
# train / evaluate  (issue: foundation)

def train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name: resnet{6n+2} (resnet20, resnet110, ...), preresnet{6n+2}, "
                                   "plain{6n+2}, vgg15, vgg15-nobn; required unless --resume finds a run in --out")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic (tests)")
    p.add_argument("--data-dir", type=existing_dir, help="where the dataset is (also searched: $RESPATHS_DATA, ./data, "
                                      "~/.cache/respaths, /usr/share/datasets)")
    p.add_argument("--out", type=out_path, help="run directory (default runs/MODEL-DATASET-seedSEED)")
    g = p.add_argument_group("recipe (He et al. 2016)")
    g.add_argument("--epochs", type=positive_int, default=164)
    g.add_argument("--batch-size", type=positive_int, default=128, help="training images per batch")
    g.add_argument("--lr", type=learning_rate, default=0.1, help="initial learning rate, in (0, 10]")
    g.add_argument("--momentum", type=momentum_value, default=0.9, help="in [0, 1)")
    g.add_argument("--weight-decay", type=weight_decay_value, default=1e-4, help="in [0, 1)")
    g.add_argument("--schedule", choices=["step", "cosine"], default="step",
                   help="step: lr/10 at 50%% and 75%% of the iterations; cosine: cosine decay to 0")
    g.add_argument("--warmup", choices=["auto", "on", "off"], default="auto",
                   help="lr/10 until the training error is below 80%% (at most 400 iterations); "
                        "auto: for 110 layers or more")
    g.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random crop (4-pixel zero padding) and horizontal flip")
    g.add_argument("--seed", type=seed_number, default=0, help="seeds the weights, data order, augmentation and "
                                                       "stochastic depth")
    g = p.add_argument_group("model")
    g.add_argument("--width", type=width_multiplier, default=1.0, help="width multiplier in (0, 16] (0.25 for quick CPU runs)")
    g.add_argument("--shortcut", choices=["A", "B"], default="A",
                   help="A: zero-padding shortcut, B: 1x1 projection where the shape changes")
    g.add_argument("--stochastic-depth", type=survival_probability, nargs="?", const=0.5, metavar="P_L",
                   help="stochastic depth (Huang et al.): block l kept with p_l = 1 - l/L (1 - P_L); "
                        "without a value P_L = 0.5")
    g.add_argument("--fixed-m", type=positive_int, metavar="M",
                   help="exactly M residual blocks active per mini-batch (Veit et al.: 23 of 54)")
    g = p.add_argument_group("data subset and evaluation")
    g.add_argument("--limit-train", type=positive_int, metavar="N", help="train on the first N training images")
    g.add_argument("--limit-test", type=positive_int, metavar="N", help="test on the first N test images")
    g.add_argument("--eval-every", type=positive_int, default=1, metavar="K",
                   help="measure test error every K epochs (and always after the last)")
    g = p.add_argument_group("speed")
    _device_arg(g)
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast precision; auto: bf16 on CUDA, fp32 elsewhere")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (default: on for CPU and CUDA)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow to start)")
    _threads_arg(g)
    g.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: batch-norm statistics over the global batch (SyncBatchNorm, CUDA only) "
                        "instead of per rank")
    g = p.add_argument_group("run directory")
    g.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out with its own settings (the same command "
                        "continues anyway; --resume also accepts one whose settings differ)")
    g.add_argument("--force", action="store_true", help="delete the run saved in --out and start over")
    _progress_arg(g)
    g.add_argument("--quiet", action="store_true", help="print nothing but errors")


def train_run(args: argparse.Namespace) -> int:
    from .training.train import train
    from .training.trainer import make_config
    options = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    if options["model"] is None:
        if not (args.resume and args.out):
            raise UserError("--model is required (e.g. --model resnet20), unless --resume and --out name a run "
                            "to continue.")
        from .io.checkpoint import read_meta
        saved = read_meta(f"{args.out}/checkpoint").get("train")
        options["model"] = saved.get("model") if isinstance(saved, dict) else None
        if not isinstance(options["model"], str) or not options["model"]:
            raise UserError(f"{args.out}/checkpoint does not say which model it trains; pass --model.")
    train(make_config(**options))
    return 0


def evaluate_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--limit", type=positive_int, metavar="N", help="use the first N images")
    p.add_argument("--batch-size", type=positive_int, default=500, help="images per batch")
    _device_arg(p)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _threads_arg(p)
    _progress_arg(p)


def evaluate_run(args: argparse.Namespace) -> int:
    import json

    from .training.trainer import evaluate, pick_device, resolve_precision
    dev = pick_device(args.device)
    args.device = str(dev)
    quiet = args.json
    if quiet:  # the preprocessing line would break the JSON on stdout
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            opened = _open(args, split=args.split)
    else:
        opened = _open(args, split=args.split)
    r = evaluate(opened.model, opened.data.to(dev), batch_size=args.batch_size, device=dev,
                 precision=resolve_precision(args.precision, dev), channels_last=dev.type != "mps",
                 progress=_progress(args))
    source = opened.description["source"]
    epoch = None
    if "checkpoint" in source:
        from .io.checkpoint import checkpoint_dir, read_meta
        epoch = read_meta(checkpoint_dir(source["checkpoint"])).get("epoch")
    name = getattr(opened.model, "config", {}).get("name") if isinstance(getattr(opened.model, "config", None), dict) else None
    r = dict(r, model=source.get("model") or name or opened.view.name, dataset=opened.data.name, split=args.split,
             epoch=epoch, **{k: v for k, v in source.items() if k != "model"})
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        of = f"{r['model']} (epoch {r['epoch']})" if epoch is not None else str(r["model"])
        print(f"{r['split']} error {r['error']:.2%} (loss {r['loss']:.4f}) of {of} "
              f"on {r['n']} {r['dataset']} {r['split']} images")
    for note in opened.warnings:
        print(f"warning: {note}.", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# layers  (issue: transformers and layer-importance methods)

def layers_args(p: argparse.ArgumentParser) -> None:
    from .layers.importance import METHODS, PAINTERS
    _model_arg(p, "a Hugging Face model directory (save_pretrained), tokenizer beside it, or a GGUF file (pip "
                  "install respaths[gguf])")
    p.add_argument("--method", required=True, choices=METHODS,
                   help="influence: ShortGPT Block Influence and pruning in its order; angular: Gromov et al.'s "
                        "angular distance and best n consecutive blocks; greedy: greedy pruning vs influence "
                        "and random order; painters: skip/repeat/reverse/random/parallel/looped middle blocks")
    p.add_argument("--text", type=text_file, help="UTF-8 text: one stream for decoders, one example per line for "
                                                  "encoders ('LABEL<TAB>TEXT' lines give labels to classifiers)")
    p.add_argument("--out", type=out_prefix, help="output prefix (writes PREFIX.json and PREFIX.csv); default "
                                                  "runs/layers-METHOD")
    p.add_argument("--split", default="layer", choices=["layer", "attn_mlp"],
                   help="one block per layer, or attention and MLP as two blocks")
    p.add_argument("--seq-len", type=positive_int, help="tokens per window (decoders) or per line (encoders) (default "
                                                        "128, or the model's positions where fewer)")
    p.add_argument("--text-batch-size", type=positive_int, default=8, help="windows or lines per batch")
    p.add_argument("--limit", type=positive_int, help="use the first N examples: windows of --seq-len tokens "
                                                      "(decoders), lines (encoders)")
    p.add_argument("--steps", type=positive_int, help="remove at most this many blocks (default: all but one)")
    p.add_argument("--seeds", type=positive_int, help="greedy and painters: random orders or permutations (default 3)")
    p.add_argument("--spans", type=k_values, help="painters: numbers of middle blocks, e.g. 1,2,4 (default 1..L-2)")
    p.add_argument("--variants", type=comma_list, help=f"painters: variants to run (default {','.join(PAINTERS)})")
    p.add_argument("--loops", type=positive_int, help="painters looped: times the parallel step runs (default: the span)")
    p.add_argument("--token", choices=["last", "first"], help="angular: the readout token (default last)")
    _device_arg(p)
    p.add_argument("--cache-mb", type=positive_int, default=1024, help="memory bound of the branch-point cache")
    p.add_argument("--force", action="store_true", help="overwrite results of a different experiment")
    p.add_argument("--no-figure", action="store_true", help="skip drawing PREFIX.png and PREFIX.svg")
    _threads_arg(p)
    _progress_arg(p)


def layers_run(args: argparse.Namespace) -> int:
    from .layers.importance import PAINTERS, layers_main
    path = layers_main(args.model, args.method, text=args.text, out=args.out, split=args.split,
                       seq_len=args.seq_len, batch_size=args.text_batch_size, limit=args.limit, steps=args.steps,
                       seeds=args.seeds or 3, spans=args.spans, variants=args.variants or PAINTERS,
                       loops=args.loops, token=args.token or "last", device=resolved_device(args), force=args.force,
                       figure=not args.no_figure, cache_bytes=args.cache_mb << 20, progress=_progress(args))
    import json
    from .layers.summary import summary_lines
    print("\n".join(summary_lines(json.loads(path.read_text()))))
    print(f"wrote {path} and {path.with_suffix('.csv')}")
    return 0


# ---------------------------------------------------------------------------------------------
# lesion / reorder  (issue 3: the lesion engine)

MODEL_HELP = ("the model: a respaths checkpoint or run directory, a Hugging Face model directory (with --text), "
              "or a spec such as respaths:resnet20, torchvision:resnet50, timm:NAME or module.path:factory")


def _model_arg(p: argparse.ArgumentParser, help_: str = MODEL_HELP) -> None:
    """The model a command opens, the same in every command: positionally or as --model (one of them;
    merged into args.model by _merge_model)."""
    p.add_argument("model_given", nargs="?", metavar="MODEL", help=help_)
    p.add_argument("--model", dest="model_option", metavar="MODEL", help="the same as MODEL")


def _merge_model(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    given = [m for m in (args.__dict__.pop("model_given"), args.__dict__.pop("model_option")) if m is not None]
    if len(given) == 2 and given[0] != given[1]:
        parser.error(f"two models given ({given[0]} and --model {given[1]}); give the model once")
    if not given or not given[0].strip():
        parser.error("give the model, positionally or as --model MODEL")
    args.model = given[0] if given else None


def _model_args(p: argparse.ArgumentParser) -> None:
    """How a command is given its model and data (respaths.opening.open_model)."""
    _model_arg(p)
    p.add_argument("--weights", help="weights for a model spec: safetensors or any torch.save file (read with "
                                     "weights_only)")
    p.add_argument("--num-classes", type=positive_int, help="classes of a model spec (default: the factory's own; the "
                                                   "dataset's for respaths: models)")
    p.add_argument("--model-kwargs", type=model_kwargs, help="KEY=VALUE,... passed to the spec's factory (e.g. img_size=32)")
    p.add_argument("--dataset", help="fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic "
                                     "(default: the checkpoint's)")
    p.add_argument("--data-dir", type=existing_dir, help="where the dataset is looked for")
    _preprocessing_args(p)


def _lesion_common_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--limit", type=positive_int, help="use the first N test images (with --text: N windows or lines)")
    p.add_argument("--seed", type=seed_number, default=0, help="seeds the random sets and the bootstrap")
    p.add_argument("--out", type=out_path, default="runs", help="directory of the result files")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per batch (--text-batch-size: text)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="float32 is exact; the others run under autocast")
    p.add_argument("--fast", action="store_true", help="fold BatchNorm into convolutions and use channels_last "
                                                      "(rounding-level differences; see respaths.engine)")
    p.add_argument("--compile", action="store_true", help="torch.compile the blocks (pays a compile up front)")
    _device_arg(p)
    p.add_argument("--cache-mb", type=positive_int, default=1024, help="memory bound of the branch-point cache")
    p.add_argument("--chunk", type=positive_int, default=64, help="plans evaluated together (results are saved per chunk)")
    p.add_argument("--force", action="store_true", help="overwrite result files of a different experiment")
    p.add_argument("--no-figure", action="store_true", help="skip drawing OUT/NAME.png and .svg beside the results")
    _text_args(p)
    _threads_arg(p)
    _progress_arg(p)


def _text_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The data of a Hugging Face model (the positional directory holds config.json and a tokenizer)."""
    p.add_argument("--text", type=text_file, help="Hugging Face model directories: a UTF-8 text file, one stream for decoders (scored "
                                  "by next-token loss), one example per line for encoders (embedding cosine to the "
                                  "full model); not for image models")
    p.add_argument("--seq-len", type=positive_int, help="--text: tokens per window (decoders) or per line "
                                                        "(encoders) (default 128, or the model's positions where fewer)")
    p.add_argument("--text-batch-size", type=positive_int,
                   help="--text: windows or lines per batch (default 8; --batch-size counts images)")


def image_size(text: str) -> tuple[int, int]:
    """RESIZE,CROP (e.g. 36,32) or one number for both."""
    try:
        parts = [int(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 1 <= parts[1] <= parts[0] <= 8192:  # beyond 8192 pixels a side: a typo
        raise argparse.ArgumentTypeError(f"expected RESIZE,CROP with 1 <= CROP <= RESIZE <= 8192 (e.g. 36,32) or one "
                                         f"size, got {text!r}")
    return parts[0], parts[1]


def _preprocessing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--normalize", choices=["imagenet", "dataset"],
                   help="the statistics the model was trained with: imagenet's, or the dataset's own (default)")
    p.add_argument("--mean", type=channel_means, help="per-channel mean in [0, 1] units the model was trained with, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=channel_stds, help="per-channel std in [0, 1] units, e.g. 0.229,0.224,0.225 (with --mean)")
    p.add_argument("--image-size", type=image_size, metavar="RESIZE,CROP",
                   help="imagefolder: shorter side resized to RESIZE, centre crop CROP (default 256,224)")


def _progress_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")


def _threads_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--threads", type=thread_count,
                   help="CPU threads for torch (default: OMP_NUM_THREADS if set, else the cores not already busy, so "
                        "that a shared machine is not oversubscribed; see docs/performance.md)")


def default_threads() -> int:
    """OMP_NUM_THREADS where it is set (the user's choice, or torchrun's one per rank), at most the cores;
    otherwise the cores this process may use that are not already busy (by the 1-minute load average), at
    least one: more threads than free cores make OpenMP's threads wait for each other (docs/performance.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    if asked.isdigit() and int(asked) > 0:
        return min(cores, int(asked))
    try:
        busy = round(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


def _progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else args.progress


def _open(args: argparse.Namespace, need_data: bool = True, split: str = "test"):
    """The model and data the command line names (respaths.opening.open_model); prints the preprocessing."""
    from .opening import open_model
    opened = open_model(args.model, _open_options(args), split=split, need_data=need_data)
    pre = opened.description.get("preprocessing")
    if pre is not None:
        print(f"preprocessing: {pre['normalize']} mean {pre['mean']} std {pre['std']}")
    return opened


def _open_options(args: argparse.Namespace):
    """The OpenOptions the command line gives (respaths.opening)."""
    from .opening import OpenOptions
    return OpenOptions(weights=args.weights, num_classes=args.num_classes, model_kwargs=args.model_kwargs or {},
                       dataset=args.dataset, data_dir=args.data_dir, limit=getattr(args, "limit", None),
                       normalize=args.normalize, mean=args.mean, std=args.std, image_size=args.image_size,
                       text=getattr(args, "text", None), seq_len=getattr(args, "seq_len", None) or 128,
                       batch_size=getattr(args, "text_batch_size", None) or 8, device=getattr(args, "device", "cpu"))


def _lesion_setup(args: argparse.Namespace):
    """(view, dataset, options for respaths.experiments.lesion) from the command line."""
    args.device = resolved_device(args, per_rank=True)
    opened = _open(args)
    d = opened.description
    if isinstance(opened.data, list):  # text: the data is what the model reads, and its metric scores it
        data_meta = {"text": d["text"], "seq_len": d["seq_len"], "text_batch_size": args.text_batch_size}
    else:
        data_meta = {"preprocessing": d["preprocessing"]}
    from .engine.options import EngineOptions
    engine = EngineOptions(dtype=args.dtype, fast=args.fast, compile=args.compile, cache_bytes=args.cache_mb << 20)
    options = dict(batch_size=args.batch_size, device=args.device, engine=engine, chunk=args.chunk, force=args.force,
                   progress=_progress(args), meta={"source": d["source"], **data_meta,
                                                   "fingerprint": d["fingerprint"], "dtype": args.dtype,
                                                   "fast": args.fast, "compile": args.compile})
    args.warnings = opened.warnings  # printed after the results, so that a bad option still fails in one line
    args.metric = opened.metric  # what the records hold, for the summary
    return opened.view, opened.data, options


def _print_summary(records: list, path: str, metric: str, warnings: list[str] = (), figure: bool = True) -> None:
    from .distributed import is_main
    from .metrics import metric_named
    if not is_main():  # under torchrun, rank 0 speaks for all
        return
    for note in warnings:
        print(f"warning: {note}.", file=sys.stderr)
    figure = _figure(path, figure)
    m = metric_named(metric)
    print(m.baseline_line(records[0]))
    groups: dict = {}
    for r in records[1:]:
        groups.setdefault((r["kind"], r["k"]), []).append(r)
    if len(groups) == 1 and records[1:] and records[1]["kind"] == "single":
        worst = sorted(records[1:], key=lambda r: r[m.field] if m.higher_is_better else -r[m.field])[:5]
        print("most harmful single deletions: " + ", ".join(f"block {r['deleted'][0]} {m.show(r)}" for r in worst))
    else:
        for (kind, k), rs in sorted(groups.items()):
            mean = sum(r[m.field] for r in rs) / len(rs)
            print(f"{kind} k={k}: mean {m.summary_name} {m.format(mean)} over {len(rs)} samples")
    print(f"wrote {path}.json and {path}.csv" + (f" and the figure {figure}" if figure else ""))


def _print_fewer(path: str) -> None:
    """Where fewer distinct configurations exist than --samples asked for, all were used: say so."""
    import json

    from .distributed import is_main
    if not is_main():
        return
    for c in json.loads(Path(f"{path}.json").read_text())["meta"]["params"].get("configurations", []):
        if c["drawn"] < c["asked"]:
            print(f"k={c['k']}: only {c['drawn']} distinct configurations exist, so all {c['drawn']} were run "
                  f"(not {c['asked']}).")


def _figure(prefix: str, draw: bool = True):
    """The result's figure beside it (PREFIX.png and .svg), where it has one; its PNG path or None."""
    from .study.run import save_result_figure
    return save_result_figure(f"{prefix}.json") if draw else None


def lesion_args(p: argparse.ArgumentParser) -> None:
    _lesion_common_args(p)
    p.add_argument("--mode", default="single", choices=["single", "random"],
                   help="single: each block deleted alone; random: --samples random sets of k blocks")
    p.add_argument("--k", type=k_range, help="random mode: numbers of deleted blocks, e.g. 1-20 or 1,5,10 (default 1-20)")
    p.add_argument("--samples", type=positive_int, help="random mode: distinct sets per k (default 10; all there are, "
                                                        "where fewer exist)")


def lesion_run(args: argparse.Namespace) -> int:
    from .experiments.lesion import lesion_random, lesion_single
    from .io.layout import ResultFolder
    view, data, options = _lesion_setup(args)
    out = str(ResultFolder(args.out).lesion(args.mode))
    if args.mode == "single":
        records = lesion_single(view, data, out=out, seed=args.seed, **options)
    else:
        records = lesion_random(view, data, k=args.k or "1-20", samples=args.samples or 10, seed=args.seed, out=out,
                                **options)
    _print_summary(records, out, args.metric, args.warnings, not args.no_figure)
    _print_fewer(out)
    return 0


def reorder_args(p: argparse.ArgumentParser) -> None:
    _lesion_common_args(p)
    p.add_argument("--k", type=k_range, default="1-20", help="numbers of swapped pairs, e.g. 1-20 or 1,5,10")
    p.add_argument("--samples", type=positive_int, default=10, help="distinct random reorderings per k (all there are, "
                                                                    "where fewer exist)")


def reorder_run(args: argparse.Namespace) -> int:
    from .experiments.lesion import reorder
    from .io.layout import ResultFolder
    view, data, options = _lesion_setup(args)
    out = str(ResultFolder(args.out).reorder)
    records = reorder(view, data, k=args.k, samples=args.samples, seed=args.seed, out=out, **options)
    _print_summary(records, out, args.metric, args.warnings, not args.no_figure)
    _print_fewer(out)
    return 0



# ---------------------------------------------------------------------------------------------
# paths  (issue 4: path lengths, path gradients, effective paths)

def paths_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--samples", type=positive_int, default=1000, help="sampled paths per length (the paper: 1,000)")
    p.add_argument("--lengths", type=lengths_range, default="all", help="path lengths k, e.g. 1-54 or 5,10,20; all: 0..n")
    p.add_argument("--batch-size", type=positive_int, default=128, help="training images per batch")
    p.add_argument("--batches", type=positive_int, default=10, help="training batches; sampled path j uses batch j mod this")
    p.add_argument("--seed", type=seed_number, default=0, help="seeds the batches and the sampled paths")
    p.add_argument("--share", type=open_unit_float, default=0.9, help="share of the total gradient the effective range holds")
    p.add_argument("--out", type=out_path, default="runs", help="directory of the result files (OUT/paths.json and .csv)")
    _device_arg(p)
    p.add_argument("--chunk", type=positive_int, help="paths backpropagated together (default: what fits in about 1 GB)")
    p.add_argument("--fast", action="store_true", help="fold BatchNorm into convolutions and use channels_last "
                                                      "(7-15%% faster on a CPU; norms within ~1.5e-3 relative)")
    p.add_argument("--force", action="store_true", help="overwrite result files of a different experiment")
    p.add_argument("--no-figure", action="store_true", help="skip drawing OUT/paths.png and .svg")
    _text_args(p)  # decoders: gradients of the LM loss; --batches counts text batches of --text-batch-size
    _threads_arg(p)
    _progress_arg(p)


def paths_run(args: argparse.Namespace) -> int:
    from .engine.options import EngineOptions
    from .paths.experiment import paths_main
    args.device = resolved_device(args, per_rank=True)
    opened = _open(args, split="train")
    doc = paths_main(opened, out=args.out, samples=args.samples, lengths=args.lengths,
                     batch_size=args.batch_size, batches=args.batches, seed=args.seed, share=args.share,
                     chunk=args.chunk, force=args.force, progress=_progress(args),
                     engine=EngineOptions(fast=args.fast))
    from .distributed import is_main
    if not is_main():  # under torchrun, rank 0 speaks for all
        return 0
    e = doc["effective"]
    lo, hi = e["lengths"]
    print(f"{doc['blocks']} blocks, lengths {e['measured_lengths'][0]}..{e['measured_lengths'][-1]} measured: "
          f"paths of length {lo}-{hi} carry {100 * e['gradient_share']:.1f}% of the total gradient and are "
          f"{100 * e['path_share']:.3g}% of all paths")
    for note in opened.warnings:
        print(f"warning: {note}.", file=sys.stderr)
    from .io.layout import ResultFolder
    prefix = ResultFolder(args.out).paths
    figure = _figure(str(prefix), not args.no_figure)
    print(f"wrote {prefix}.json and .csv" + (f" and the figure {figure}" if figure else ""))
    return 0


# ---------------------------------------------------------------------------------------------
# reproduce / demo / report  (issue 5: the whole study, figures and the HTML report)

def reproduce_args(p: argparse.ArgumentParser) -> None:
    from .study.reproduce import PRESETS
    shown = [n for n, pr in PRESETS.items() if not pr.hidden]
    p.add_argument("--preset", default="quick", choices=list(PRESETS), metavar="NAME",
                   help="; ".join(f"{n}: {PRESETS[n].description}" for n in shown))
    p.add_argument("--out", type=out_path, help="run directory (default runs/PRESET); running again resumes it")
    p.add_argument("--data-dir", type=existing_dir, help="where the dataset is looked for (also $RESPATHS_DATA, /usr/share/datasets)")
    _device_arg(p)
    p.add_argument("--force", action="store_true", help="start over in --out, deleting its models and results")
    _threads_arg(p)
    _progress_arg(p)


def reproduce_run(args: argparse.Namespace) -> int:
    from .study.reproduce import reproduce
    from .io.layout import RunLayout
    path = reproduce(args.preset, args.out or RunLayout.default(args.preset), force=args.force,
                     device=resolved_device(args), data_dir=args.data_dir, progress=_progress(args))
    print(f"report: {path}")
    return 0


def study_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p, "the net to study: a respaths checkpoint or run directory, a model spec (respaths:resnet32, "
                  "torchvision:resnet18, timm:NAME, module.path:factory), or a Hugging Face model directory with "
                  "--text FILE, or a GGUF file with --text FILE")
    p.add_argument("--out", type=out_path, required=True, help="run directory (running again resumes it)")
    p.add_argument("--weights", help="weights for a model spec: safetensors or any torch.save file (read with "
                                     "weights_only), e.g. a published .th")
    p.add_argument("--num-classes", type=positive_int, help="classes of a model spec (default: the dataset's for "
                                                            "respaths: specs, else the factory's own)")
    p.add_argument("--model-kwargs", type=model_kwargs, help="KEY=VALUE,... passed to the spec's factory (e.g. img_size=32)")
    p.add_argument("--compare", action="append", metavar="NAME=MODEL[@WEIGHTS]",
                   help="a second net on the same images, with paired statistics: vgg=MODEL (a plain net, fig. 3), "
                        "stochastic=MODEL (stochastic depth, fig. 8), fixed=MODEL, or any name; repeatable")
    p.add_argument("--dataset", help="fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic "
                                     "(default: a checkpoint's own)")
    p.add_argument("--data-dir", type=existing_dir, help="where the dataset is looked for")
    _preprocessing_args(p)
    p.add_argument("--budget", choices=["quick", "paper"], default="quick",
                   help="quick: 1,000 test images, 4 sets per k, 24 paths per length (minutes on a CPU); paper: "
                        "all test images, 20 sets per k, 1,000 paths per length (the paper's protocol)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="test images (default: the budget's); with --text: "
                                                                  "windows (decoders) or lines (encoders), default all")
    p.add_argument("--seed", type=seed_number, default=0, help="seeds the random sets, swaps, paths and bootstrap")
    _device_arg(p)
    p.add_argument("--exact", action="store_true", help="no BatchNorm folding in the quick budget (bit-exact, slower)")
    p.add_argument("--force", action="store_true", help="start over in --out, deleting its results")
    _text_args(p)  # a Hugging Face directory: the study scored by LM loss (decoders) or embedding cosine (encoders)
    _threads_arg(p)
    _progress_arg(p)


def study_run(args: argparse.Namespace) -> int:
    from .study.run import parse_compare, study
    parse_compare(args.compare)  # a bad --compare is refused before any model is opened
    path = study(args.model, args.out, weights=args.weights, compare=args.compare, budget_name=args.budget,
                 limit=args.limit, seed=args.seed, device=resolved_device(args), data_dir=args.data_dir,
                 force=args.force, progress=_progress(args), fast=False if args.exact else None,
                 num_classes=args.num_classes, model_kwargs=args.model_kwargs or {}, dataset=args.dataset,
                 normalize=args.normalize, mean=args.mean, std=args.std, image_size=args.image_size,
                 text=args.text, seq_len=args.seq_len, batch_size=args.text_batch_size)
    print(f"report: {path}")
    return 0


def demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=out_path, default="respaths-demo", help="run directory; running again reuses what is done")
    p.add_argument("--data-dir", type=existing_dir, help="where Fashion-MNIST is looked for")
    _threads_arg(p)
    _progress_arg(p)


def _demo_outdated(out: str) -> bool:
    """A demo run of other settings (an older respaths) is started over; validation.check_out_dir has
    refused every other kind of directory already."""
    from .study.reproduce import holds_other_settings, preset
    if not holds_other_settings(out, preset("quick")):
        return False
    print(f"{out} holds a demo run with other settings (an older respaths?); starting it over.", file=sys.stderr)
    return True


def demo_run(args: argparse.Namespace) -> int:
    import time

    from .study.reproduce import reproduce
    start = time.perf_counter()
    path = reproduce("quick", args.out, data_dir=args.data_dir, force=_demo_outdated(args.out),
                     progress=_progress(args))
    print(f"\nrespaths demo finished in {time.perf_counter() - start:.0f} s.\n"
          f"Open the report in a browser: {path.resolve()}\n"
          f"Figures (PNG and SVG): {path.parent.resolve() / 'figures'}; results (JSON and CSV): "
          f"{path.parent.resolve() / 'results'}")
    return 0


def report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories written by respaths reproduce; "
                                                          "several are shown side by side")
    p.add_argument("--out", type=out_path, help="the HTML file, or a directory for report.html and, for nets of several depths, the "
                                 "depth series' figures and series.json (default DIR/report.html for one run, "
                                 "report.html for several)")


def report_run(args: argparse.Namespace) -> int:
    from .study.report import build
    out = args.out or (None if len(args.dirs) == 1 else "report.html")
    print(f"report: {build(args.dirs, out)}")
    return 0


# ---------------------------------------------------------------------------------------------
# prune  (issue 16: export a model with blocks removed)

def prune_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p, "a Hugging Face model directory (save_pretrained) or GGUF file, a respaths checkpoint directory, "
                  "or a model spec such as respaths:resnet20, torchvision:resnet18")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--blocks", type=comma_list, help="blocks to remove, by index or name, separated by commas: 5,6")
    which.add_argument("--from", dest="result", metavar="RESULT.json",
                       help="a result of `respaths layers` (greedy, influence, angular) or `respaths lesion --mode "
                            "single` on this model; with --remove N, its N least harmful blocks go")
    p.add_argument("--remove", type=positive_int, metavar="N", help="with --from: how many blocks to remove")
    p.add_argument("--out", type=out_path, required=True, help="a new directory for the pruned model")
    p.add_argument("--weights", help="weights for a model given by spec (.safetensors or a torch.save file)")
    p.add_argument("--num-classes", type=positive_int, help="classes of a model given by spec")
    p.add_argument("--model-kwargs", type=model_kwargs, help="KEY=VALUE,... passed to the spec's factory")
    g = p.add_argument_group("data for the metric before and after (optional)")
    g.add_argument("--dataset", help="images: fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic "
                                     "(default: a checkpoint's own)")
    g.add_argument("--data-dir", type=existing_dir, help="where the dataset is looked for")
    _preprocessing_args(g)
    g.add_argument("--limit", type=positive_int, help="use the first N test images (or N text examples)")
    g.add_argument("--text", type=text_file, help="Hugging Face models: a UTF-8 text file (as for respaths layers)")
    g.add_argument("--seq-len", type=positive_int, help="tokens per window or line of --text (default 128, or the "
                                                        "model's positions where fewer)")
    g.add_argument("--text-batch-size", type=positive_int, help="windows or lines of --text per batch (default 8)")
    _threads_arg(p)
    _progress_arg(p)


def prune_run(args: argparse.Namespace) -> int:
    from .layers.export import export
    if args.result and args.remove is None:
        raise UserError("--from needs --remove N: how many of the result's least harmful blocks to remove.")
    if args.remove is not None and not args.result:
        raise UserError("--remove goes with --from RESULT.json; with --blocks, list the blocks themselves.")
    blocks = args.blocks or None  # --blocks "" names none: as if not given
    summary = export(args.model, args.out, blocks=blocks, result=args.result, remove=args.remove,
                     options=_open_options(args), progress=_progress(args))
    print(summary)
    return 0


# ---------------------------------------------------------------------------------------------

COMMANDS = {
    "train": (train_args, train_run, "train a model (SGD, stochastic depth, fixed-m, resumable)"),
    "evaluate": (evaluate_args, evaluate_run, "test error of a checkpoint"),
    "lesion": (lesion_args, lesion_run, "delete blocks at test time: each alone, or random sets of k"),
    "reorder": (reorder_args, reorder_run, "swap k random pairs of compatible blocks at test time"),
    "paths": (paths_args, paths_run, "path gradients by path length, and the effective paths (Veit et al. sec. 5)"),
    "reproduce": (reproduce_args, reproduce_run, "the whole study of Veit et al.: train, run every experiment, "
                                                 "write the figures and an HTML report (resumable)"),
    "study": (study_args, study_run, "the paper's whole test-time study on a model you bring (a checkpoint, "
                                    "published weights, torchvision or timm), with the report (resumable)"),
    "demo": (demo_args, demo_run, "the quick study on Fashion-MNIST into ./respaths-demo, in minutes on a CPU"),
    "report": (report_args, report_run, "rebuild the HTML report from the results of one or more runs"),
    "prune": (prune_args, prune_run, "export a model with blocks really removed (loads and runs on its own)"),
    "layers": (layers_args, layers_run, "which transformer layers matter: Block Influence, angular "
                                        "distance, greedy pruning, painters variants"),
}


# ---------------------------------------------------------------------------------------------
# The output of a command: locked while it runs, left as it was found when it fails

def _output(args: argparse.Namespace) -> tuple[str, Path, Path] | None:
    """(what --out names, the directory the command writes into, its lock file), or None for commands
    that write no run output (evaluate, report) or handle their own (prune writes a new directory)."""
    from .io.layout import LOCK, RunLayout, layers_prefix, prefix_lock
    if args.command in ("lesion", "reorder", "paths", "demo", "study"):
        out = args.out
    elif args.command == "reproduce":
        out = args.out or str(RunLayout.default(args.preset))
    elif args.command == "train":
        if not (args.model or args.out):
            return None  # refused by train_run
        from .training.trainer import default_out
        out = args.out or default_out(argparse.Namespace(model=args.model, dataset=args.dataset, seed=args.seed))
    elif args.command == "layers":  # --out is a prefix: lock that prefix, not the whole directory
        prefix = Path(args.out or layers_prefix(args.method))
        return str(prefix), prefix.parent, prefix_lock(prefix)
    else:
        return None
    return out, Path(out), Path(out) / LOCK


def _missing(directory: Path) -> list[Path]:
    """directory and those of its parents that do not exist yet, deepest first."""
    missing = []
    for d in (directory, *directory.parents):
        if d.exists() or d.is_symlink():
            break
        missing.append(d)
    return missing


def _remove_empty(created: list[Path]) -> None:
    """Undo the directories a failed command created, as long as nothing was put in them."""
    for d in created:
        try:
            d.rmdir()
        except OSError:  # not empty (or already gone): leave it
            return


def _run(args: argparse.Namespace, target: tuple[str, Path, Path] | None) -> int:
    """args.func, holding the lock on its output `target` (see _output)."""
    from .io.atomic import output_lock, remove_stale
    if target is None:
        return int(args.func(args) or 0)
    out, directory, lock_file = target
    directory.mkdir(parents=True, exist_ok=True)
    with output_lock(lock_file, out):
        remove_stale(directory)  # what a killed run left half-written; no live run writes here now
        return int(args.func(args) or 0)


class Parser(argparse.ArgumentParser):
    """argparse with one line for a bad option: what was wrong and where the help is, not the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, unless the help says it already or there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> Parser:
    parser = Parser(
        prog="respaths", allow_abbrev=False,
        description="Residual networks as ensembles of paths: train the models of Veit et al. (2016), "
                    "delete and reorder blocks at test time, and measure which paths carry the gradient.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"respaths {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = {}
    for name, (add_args, run, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".",
                           formatter_class=HelpFormatter, allow_abbrev=False)
        add_args(p)
        p.set_defaults(func=run)
        parser.commands[name] = p
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's parser, so that its line points to its own --help
        (parser.commands.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "func", None) and "model_given" in vars(args):
        _merge_model(args, parser.commands[args.command])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not getattr(args, "func", None):
        build_parser().print_help()
        return 2
    created: list[Path] = []  # the directories this command creates, removed again if it fails
    target = None
    threads = None
    try:
        from . import validation
        from .distributed import launched
        validation.check_launch()
        if launched() and args.command not in ("train", "lesion", "reorder", "paths"):
            raise UserError(f"respaths {args.command} does not split its work across ranks; run it without torchrun "
                            f"(train, lesion, reorder and paths do run under torchrun).")
        validation.check_applies(args)
        if "seq_len" in vars(args) and args.seq_len is None:
            args.seq_len = validation.default_seq_len(args.model)
        if "text_batch_size" in vars(args) and args.text_batch_size is None:
            args.text_batch_size = 8
        if args.command in validation.KIND_OF_COMMAND:
            out = _output(args)
            if out is not None:
                validation.check_out_dir(args.command, out[0], getattr(args, "force", False))
        if "threads" in vars(args):
            import torch
            threads = torch.get_num_threads()
            args.threads = args.threads or default_threads()
            torch.set_num_threads(args.threads)
        # under torchrun rank 0 alone writes (and locks, and cleans up); the other ranks write nothing
        target = _output(args) if os.environ.get("RANK", "0") == "0" else None
        created = _missing(target[1].absolute()) if target else []
        return _run(args, target)
    except UserError as e:  # bad input: one sentence; anything else is a bug and shows its traceback
        _remove_empty(created)
        if os.environ.get("RESPATHS_DEBUG"):
            raise
        msg = " ".join(str(e.args[0] if e.args else e).split())
        print(f"respaths {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # permission, no space, not a directory: name the path and the reason
        _remove_empty(created)
        if os.environ.get("RESPATHS_DEBUG"):
            raise
        path = e.filename or (target[0] if target else None)
        where = f"{path}: " if path else ""
        reason = e.strerror or str(e)
        print(f"respaths {args.command}: error: {where}{reason}; check the path and try again.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _remove_empty(created)
        print(f"respaths {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    finally:
        if threads is not None:  # main() may run again in this process (tests, notebooks)
            import torch
            torch.set_num_threads(threads)


if __name__ == "__main__":
    sys.exit(main())
