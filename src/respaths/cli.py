"""The `respaths` command: a thin layer of argparse over the library.

Each subcommand is a pair: `<name>_args(parser)` declares its options, `<name>_run(args)` calls the
library. Bad input raises UserError with one sentence (OSErrors name the path and reason); main() prints
it and exits 2. Anything else is a bug: traceback, exit 1. RESPATHS_DEBUG=1 re-raises user errors too.
"""
from __future__ import annotations

import argparse
import os
import sys

from .core import UserError


# ---------------------------------------------------------------------------------------------
# Option types: argparse calls these, so bad values stop before any work or file (exit 2, one line).

def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return v


def open_unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v < 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return v


def k_range(text: str) -> str:
    """A rising range '1-20' or a list '1,5,10'; returned as given, so result files stay the same."""
    from .lesion import parse_k
    try:
        parse_k(text)
    except UserError:
        raise argparse.ArgumentTypeError(f"expected a rising range like 1-20 or a list like 1,5,10, got {text!r}") from None
    return text


def lengths_range(text: str) -> str:
    return text if text == "all" else k_range(text)


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



# ---------------------------------------------------------------------------------------------
# train / evaluate  (issue: foundation)

def train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name: resnet{6n+2} (resnet20, resnet110, ...), preresnet{6n+2}, "
                                   "plain{6n+2}, vgg15, vgg15-nobn; required unless --resume finds a run in --out")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic (tests)")
    p.add_argument("--data-dir", help="where the dataset is (also searched: $RESPATHS_DATA, ./data, "
                                      "~/.cache/respaths, /usr/share/datasets)")
    p.add_argument("--out", help="run directory (default runs/MODEL-DATASET-seedSEED)")
    g = p.add_argument_group("recipe (He et al. 2016)")
    g.add_argument("--epochs", type=positive_int, default=164)
    g.add_argument("--batch-size", type=positive_int, default=128)
    g.add_argument("--lr", type=float, default=0.1, help="initial learning rate")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--schedule", choices=["step", "cosine"], default="step",
                   help="step: lr/10 at 50%% and 75%% of the iterations; cosine: cosine decay to 0")
    g.add_argument("--warmup", choices=["auto", "on", "off"], default="auto",
                   help="lr/10 until the training error is below 80%% (at most 400 iterations); "
                        "auto: for 110 layers or more")
    g.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random crop (4-pixel zero padding) and horizontal flip")
    g.add_argument("--seed", type=int, default=0, help="seeds the weights, data order, augmentation and "
                                                       "stochastic depth")
    g = p.add_argument_group("model")
    g.add_argument("--width", type=float, default=1.0, help="width multiplier (0.25 for quick CPU runs)")
    g.add_argument("--shortcut", choices=["A", "B"], default="A",
                   help="A: zero-padding shortcut, B: 1x1 projection where the shape changes")
    g.add_argument("--stochastic-depth", type=float, nargs="?", const=0.5, metavar="P_L",
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
    g.add_argument("--device", type=device_name, default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast precision; auto: bf16 on CUDA, fp32 elsewhere")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (default: on for CPU and CUDA)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow to start)")
    g.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)")
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
    from .train import make_config, train
    options = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    if options["model"] is None:
        if not (args.resume and args.out):
            raise UserError("--model is required (e.g. --model resnet20), unless --resume and --out name a run "
                            "to continue.")
        from .checkpoint import read_meta
        options["model"] = (read_meta(f"{args.out}/checkpoint").get("train") or {}).get("model")
        if not options["model"]:
            raise UserError(f"{args.out}/checkpoint does not say which model it trains; pass --model.")
    train(make_config(**options))
    return 0


def evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint directory written by respaths train (or its run directory)")
    p.add_argument("--data-dir", help="where the dataset is (the checkpoint names the dataset)")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--limit", type=positive_int, metavar="N", help="use the first N images")
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument("--device", type=device_name, default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def evaluate_run(args: argparse.Namespace) -> int:
    import json
    from .train import evaluate_checkpoint
    r = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, split=args.split, limit=args.limit,
                            batch_size=args.batch_size, device=args.device, precision=args.precision)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{r['split']} error {r['error']:.2%} (loss {r['loss']:.4f}) of {r['model']} (epoch {r['epoch']}) "
              f"on {r['n']} {r['dataset']} {r['split']} images")
    return 0


# ---------------------------------------------------------------------------------------------
# layers  (issue: transformers and layer-importance methods)

def layers_args(p: argparse.ArgumentParser) -> None:
    from .layer_importance import METHODS, PAINTERS
    p.add_argument("model", help="a Hugging Face model directory (save_pretrained), tokenizer beside it")
    p.add_argument("--method", required=True, choices=METHODS,
                   help="influence: ShortGPT Block Influence and pruning in its order; angular: Gromov et al.'s "
                        "angular distance and best n consecutive blocks; greedy: greedy pruning vs influence "
                        "and random order; painters: skip/repeat/reverse/random/parallel/looped middle blocks")
    p.add_argument("--text", help="UTF-8 text: one stream for decoders, one example per line for encoders "
                                  "('LABEL<TAB>TEXT' lines give labels to classifiers)")
    p.add_argument("--out", help="output prefix (writes PREFIX.json and PREFIX.csv); default runs/layers-METHOD")
    p.add_argument("--split", default="layer", choices=["layer", "attn_mlp"],
                   help="one block per layer, or attention and MLP as two blocks")
    p.add_argument("--seq-len", type=positive_int, default=128, help="tokens per window (decoders) or per line (encoders)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--limit", type=positive_int, help="use at most this many examples (lines or windows)")
    p.add_argument("--steps", type=positive_int, help="remove at most this many blocks (default: all but one)")
    p.add_argument("--seeds", type=positive_int, default=3, help="random orders (greedy) or permutations (painters)")
    p.add_argument("--spans", type=k_range, help="painters: numbers of middle blocks, e.g. 1,2,4 (default 1..L-2)")
    p.add_argument("--variants", default=",".join(PAINTERS), help="painters: variants to run")
    p.add_argument("--loops", type=positive_int, help="painters looped: times the parallel step runs (default: the span)")
    p.add_argument("--token", default="last", choices=["last", "first"], help="angular: the readout token")
    p.add_argument("--device", type=device_name, default="cpu")
    p.add_argument("--cache-mb", type=positive_int, default=1024, help="memory bound of the branch-point cache")
    p.add_argument("--force", action="store_true", help="overwrite results of a different experiment")
    p.add_argument("--no-figure", action="store_true", help="skip drawing PREFIX.png and PREFIX.svg")


def layers_run(args: argparse.Namespace) -> int:
    from .layer_importance import layers_main
    from .lesion import parse_k
    spans = parse_k(args.spans) if args.spans else None
    path = layers_main(args.model, args.method, text=args.text, out=args.out, split=args.split,
                       seq_len=args.seq_len, batch_size=args.batch_size, limit=args.limit, steps=args.steps,
                       seeds=args.seeds, spans=spans, variants=[v for v in args.variants.split(",") if v],
                       loops=args.loops, token=args.token, device=args.device, force=args.force,
                       figure=not args.no_figure, cache_bytes=args.cache_mb << 20)
    print(f"wrote {path} and {path.with_suffix('.csv')}")
    return 0


# ---------------------------------------------------------------------------------------------
# lesion / reorder  (issue 3: the lesion engine)

def _lesion_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="a respaths checkpoint directory (or give --model)")
    p.add_argument("--model", help="a model that is not a respaths checkpoint: torchvision:resnet50, "
                                   "timm:NAME, respaths:preresnet110 or module.path:factory")
    p.add_argument("--weights", help="weights for --model: .safetensors, or .pt/.pth read with weights_only")
    p.add_argument("--num-classes", type=positive_int, help="classes of --model (default: the factory's own; the "
                                                   "dataset's for respaths: models)")
    p.add_argument("--model-kwargs", help="KEY=VALUE,... passed to the --model factory (e.g. img_size=32)")
    p.add_argument("--dataset", help="fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic "
                                     "(default: the checkpoint's)")
    p.add_argument("--data-dir", help="where the dataset is looked for")
    _preprocessing_args(p)
    p.add_argument("--limit", type=positive_int, help="use the first N test images")
    p.add_argument("--seed", type=int, default=0, help="seeds the random sets and the bootstrap")
    p.add_argument("--out", default="runs", help="directory of the result files")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="float32 is exact; the others run under autocast")
    p.add_argument("--fast", action="store_true", help="fold BatchNorm into convolutions and use channels_last "
                                                      "(rounding-level differences; see respaths.engine)")
    p.add_argument("--compile", action="store_true", help="torch.compile the blocks (pays a compile up front)")
    p.add_argument("--device", type=device_name, default="cpu")
    p.add_argument("--cache-mb", type=positive_int, default=1024, help="memory bound of the branch-point cache")
    p.add_argument("--chunk", type=positive_int, default=64, help="plans evaluated together (results are saved per chunk)")
    p.add_argument("--force", action="store_true", help="overwrite result files of a different experiment")
    _progress_arg(p)


NORMALIZE = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def _preprocessing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--normalize", choices=["imagenet", "dataset"],
                   help="the statistics the model was trained with: imagenet's, or the dataset's own (default)")
    p.add_argument("--mean", help="per-channel mean in [0, 1] units the model was trained with, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", help="per-channel std in [0, 1] units, e.g. 0.229,0.224,0.225 (with --mean)")


def _floats(text: str, option: str, channels: int) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{option} {text!r} is not a comma-separated list of numbers; give e.g. 0.485,0.456,0.406.") from None
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise UserError(f"{option} gives {len(values)} values but the images have {channels} channels; give "
                        f"one value per channel.")
    return values


def _preprocess(args: argparse.Namespace, data):
    """data normalised as the model expects (--normalize, --mean/--std), and the values for the meta."""
    from dataclasses import replace
    if (args.mean is None) != (args.std is None):
        raise UserError("--mean and --std go together; give both (or --normalize imagenet|dataset).")
    if args.mean is not None and args.normalize is not None:
        raise UserError("give either --normalize or --mean/--std, not both.")
    if args.mean is not None:
        mean = _floats(args.mean, "--mean", data.in_channels)
        std = _floats(args.std, "--std", data.in_channels)
        if any(v <= 0 for v in std):
            raise UserError(f"--std {args.std} has a value that is not positive; standard deviations are > 0.")
        name = "given"
    elif args.normalize == "imagenet":
        if data.in_channels != 3:
            raise UserError(f"--normalize imagenet needs RGB images, but {data.name} has {data.in_channels} channel(s).")
        (mean, std), name = NORMALIZE["imagenet"], "imagenet"
    else:
        mean, std, name = tuple(data.mean), tuple(data.std), "dataset"
    chosen = {"normalize": name, "mean": list(mean), "std": list(std)}
    return replace(data, mean=tuple(mean), std=tuple(std)), chosen


def _model_kwargs(text: str | None) -> dict:
    """KEY=VALUE,... with each VALUE read as a Python literal where it is one (32, True, 0.1), else a string."""
    import ast
    out: dict = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UserError(f"--model-kwargs {text!r}: {item!r} is not KEY=VALUE; give e.g. img_size=32,drop_rate=0.")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def _progress_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")


def _progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else args.progress


def _lesion_setup(args: argparse.Namespace):
    """(view, dataset, options for respaths.lesion) from the command line."""
    import torch

    from .adapters import view as make_view
    from .data import load_dataset
    from .distributed import local_device
    from .engine import iterate_batches
    from .loading import load_model
    args.device = str(local_device(args.device))  # under torchrun, "cuda" is this rank's own GPU
    if bool(args.checkpoint) == bool(args.model):
        raise UserError("give either a respaths checkpoint directory or --model SPEC (not both, not neither).")
    if args.weights and not args.model:
        raise UserError("--weights goes with --model; a checkpoint directory holds its own weights.")
    if args.model_kwargs and not args.model:
        raise UserError("--model-kwargs goes with --model; a checkpoint directory builds its own model.")
    factory_kwargs = _model_kwargs(args.model_kwargs)
    dataset_name = args.dataset
    if args.checkpoint:
        model, meta = load_model(args.checkpoint, device=args.device)
        if dataset_name is None:
            ds = meta.get("dataset")
            dataset_name = ds.get("name") if isinstance(ds, dict) else ds
        source = {"checkpoint": args.checkpoint}
    if dataset_name is None:
        raise UserError("say which images to use with --dataset (fashion-mnist, cifar10, cifar100, "
                        "imagefolder:PATH or synthetic).")
    data = load_dataset(dataset_name, args.data_dir, split="test", limit=args.limit)
    data, preprocessing = _preprocess(args, data)
    print(f"preprocessing: {preprocessing['normalize']} mean {preprocessing['mean']} std {preprocessing['std']}")
    if args.model:
        kwargs = dict(factory_kwargs)
        num_classes = args.num_classes
        if args.model.startswith("respaths:"):
            num_classes = num_classes or data.num_classes
            kwargs["in_channels"] = data.in_channels
        model, _ = load_model(args.model, args.weights, num_classes=num_classes, device=args.device, **kwargs)
        source = {"model": args.model, "weights": args.weights}
    x, _ = next(iter(iterate_batches(data.take(2), 2, torch.device(args.device))))
    with torch.inference_mode():
        v = make_view(model.eval(), x)
        outputs = v(x).shape[-1]
    if outputs < data.num_classes:
        raise UserError(f"the model has {outputs} outputs but {data.name} has {data.num_classes} classes; "
                        f"give --num-classes or a model trained on this dataset.")
    options = dict(batch_size=args.batch_size, device=args.device, dtype=args.dtype, fast=args.fast,
                   compile=args.compile, cache_bytes=args.cache_mb << 20, chunk=args.chunk, force=args.force,
                   progress=_progress(args), meta={"source": source, "preprocessing": preprocessing, "dtype": args.dtype, "fast": args.fast,
                                        "compile": args.compile})
    return v, data, options


def _print_summary(records: list, path: str) -> None:
    from .distributed import is_main
    if not is_main():  # under torchrun, rank 0 speaks for all
        return
    base = records[0]
    print(f"baseline error {100 * base['error']:.2f}% on {base['n']} images")
    groups: dict = {}
    for r in records[1:]:
        groups.setdefault((r["kind"], r["k"]), []).append(r)
    if len(groups) == 1 and records[1:] and records[1]["kind"] == "single":
        worst = sorted(records[1:], key=lambda r: -r["error"])[:5]
        print("most harmful single deletions: " + ", ".join(
            f"block {r['deleted'][0]} {100 * r['error']:.2f}%" for r in worst))
    else:
        for (kind, k), rs in sorted(groups.items()):
            mean = sum(r["error"] for r in rs) / len(rs)
            print(f"{kind} k={k}: mean error {100 * mean:.2f}% over {len(rs)} samples")
    print(f"wrote {path}.json and {path}.csv")


def lesion_args(p: argparse.ArgumentParser) -> None:
    _lesion_common_args(p)
    p.add_argument("--mode", default="single", choices=["single", "random"],
                   help="single: each block deleted alone; random: --samples random sets of k blocks")
    p.add_argument("--k", type=k_range, default="1-20", help="random mode: numbers of deleted blocks, e.g. 1-20 or 1,5,10")
    p.add_argument("--samples", type=positive_int, default=10, help="random mode: sets per k")


def lesion_run(args: argparse.Namespace) -> int:
    import os

    from .lesion import lesion_random, lesion_single
    view, data, options = _lesion_setup(args)
    out = os.path.join(args.out, f"lesion-{args.mode}")
    if args.mode == "single":
        records = lesion_single(view, data, out=out, seed=args.seed, **options)
    else:
        records = lesion_random(view, data, k=args.k, samples=args.samples, seed=args.seed, out=out, **options)
    _print_summary(records, out)
    return 0


def reorder_args(p: argparse.ArgumentParser) -> None:
    _lesion_common_args(p)
    p.add_argument("--k", type=k_range, default="1-20", help="numbers of swapped pairs, e.g. 1-20 or 1,5,10")
    p.add_argument("--samples", type=positive_int, default=10, help="random reorderings per k")


def reorder_run(args: argparse.Namespace) -> int:
    import os

    from .lesion import reorder
    view, data, options = _lesion_setup(args)
    out = os.path.join(args.out, "reorder")
    records = reorder(view, data, k=args.k, samples=args.samples, seed=args.seed, out=out, **options)
    _print_summary(records, out)
    return 0



# ---------------------------------------------------------------------------------------------
# paths  (issue 4: path lengths, path gradients, effective paths)

def paths_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a respaths checkpoint directory (or the run directory holding one)")
    p.add_argument("--samples", type=positive_int, default=1000, help="sampled paths per length (the paper: 1,000)")
    p.add_argument("--lengths", type=lengths_range, default="all", help="path lengths k, e.g. 1-54 or 5,10,20; all: 0..n")
    p.add_argument("--batch-size", type=positive_int, default=128, help="training images per batch")
    p.add_argument("--batches", type=positive_int, default=10, help="training batches; sampled path j uses batch j mod this")
    p.add_argument("--seed", type=int, default=0, help="seeds the batches and the sampled paths")
    p.add_argument("--share", type=open_unit_float, default=0.9, help="share of the total gradient the effective range holds")
    p.add_argument("--dataset", help="fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic "
                                     "(default: the checkpoint's)")
    p.add_argument("--data-dir", help="where the dataset is looked for")
    p.add_argument("--out", default="runs", help="directory of the result files (OUT/paths.json and .csv)")
    p.add_argument("--device", type=device_name, default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    p.add_argument("--chunk", type=positive_int, help="paths backpropagated together (default: what fits in about 1 GB)")
    p.add_argument("--fast", action="store_true", help="fold BatchNorm into convolutions and use channels_last "
                                                      "(7-15%% faster on a CPU; norms within ~1.5e-3 relative)")
    p.add_argument("--force", action="store_true", help="overwrite result files of a different experiment")
    _progress_arg(p)


def paths_run(args: argparse.Namespace) -> int:
    from .paths import paths_main
    doc = paths_main(args.checkpoint, out=args.out, samples=args.samples, lengths=args.lengths,
                     batch_size=args.batch_size, batches=args.batches, seed=args.seed, share=args.share,
                     dataset=args.dataset, data_dir=args.data_dir, device=args.device, chunk=args.chunk,
                     force=args.force, progress=_progress(args), fast=args.fast)
    from .distributed import is_main
    if not is_main():  # under torchrun, rank 0 speaks for all
        return 0
    e = doc["effective"]
    lo, hi = e["lengths"]
    print(f"{doc['blocks']} blocks, lengths {e['measured_lengths'][0]}..{e['measured_lengths'][-1]} measured: "
          f"paths of length {lo}-{hi} carry {100 * e['gradient_share']:.1f}% of the total gradient and are "
          f"{100 * e['path_share']:.3g}% of all paths")
    print(f"wrote {os.path.join(args.out, 'paths')}.json and .csv")
    return 0


# ---------------------------------------------------------------------------------------------
# reproduce / demo / report  (issue 5: the whole study, figures and the HTML report)

def reproduce_args(p: argparse.ArgumentParser) -> None:
    from .reproduce import PRESETS
    shown = [n for n, pr in PRESETS.items() if not pr.hidden]
    p.add_argument("--preset", default="quick", choices=list(PRESETS), metavar="NAME",
                   help="; ".join(f"{n}: {PRESETS[n].description}" for n in shown))
    p.add_argument("--out", help="run directory (default runs/PRESET); running again resumes it")
    p.add_argument("--data-dir", help="where the dataset is looked for (also $RESPATHS_DATA, /usr/share/datasets)")
    p.add_argument("--device", type=device_name, help="cpu, cuda, cuda:N (default: cuda when there is one)")
    p.add_argument("--force", action="store_true", help="start over in --out, deleting its models and results")


def reproduce_run(args: argparse.Namespace) -> int:
    from .reproduce import reproduce
    path = reproduce(args.preset, args.out or f"runs/{args.preset}", force=args.force, device=args.device,
                     data_dir=args.data_dir)
    print(f"report: {path}")
    return 0


def demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="respaths-demo", help="run directory; running again reuses what is done")
    p.add_argument("--data-dir", help="where Fashion-MNIST is looked for")


def _demo_outdated(out: str) -> bool:
    """The demo folder is the demo's own: a run of other settings (an older respaths) is started over."""
    from .reproduce import holds_other_settings, preset
    if not holds_other_settings(out, preset("quick")):
        return False
    print(f"{out} holds a demo run with other settings (an older respaths?); starting it over.", file=sys.stderr)
    return True


def demo_run(args: argparse.Namespace) -> int:
    import time

    from .reproduce import reproduce
    start = time.perf_counter()
    path = reproduce("quick", args.out, data_dir=args.data_dir, force=_demo_outdated(args.out))
    print(f"\nrespaths demo finished in {time.perf_counter() - start:.0f} s.\n"
          f"Open the report in a browser: {path.resolve()}\n"
          f"Figures (PNG and SVG): {path.parent.resolve() / 'figures'}; results (JSON and CSV): "
          f"{path.parent.resolve() / 'results'}")
    return 0


def report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories written by respaths reproduce; "
                                                          "several are shown side by side")
    p.add_argument("--out", help="the HTML file (default DIR/report.html for one run, report.html for several)")


def report_run(args: argparse.Namespace) -> int:
    from .report import build
    out = args.out or (None if len(args.dirs) == 1 else "report.html")
    print(f"report: {build(args.dirs, out)}")
    return 0


# ---------------------------------------------------------------------------------------------
# prune  (issue 16: export a model with blocks removed)

def prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a Hugging Face model directory (save_pretrained), a respaths checkpoint "
                                 "directory, or a model name such as resnet20, torchvision:resnet18")
    p.add_argument("--blocks", required=True, help="blocks to remove, by index or name, separated by commas: 5,6")
    p.add_argument("--out", required=True, help="a new directory for the pruned model")
    p.add_argument("--weights", help="weights for a model given by name (.safetensors or .pt)")
    p.add_argument("--num-classes", type=int)


def prune_run(args: argparse.Namespace) -> int:
    import json
    import shutil
    import tempfile
    from pathlib import Path
    from .prune import prune
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty; give a new directory to --out.")
    blocks = [b.strip() for b in args.blocks.split(",") if b.strip()]
    hf = (Path(args.model) / "config.json").is_file()
    if hf:
        from .adapters.hf import load
        model, tokenizer = load(args.model)
        meta = {"model": {"hf": str(args.model)}}
    else:
        from .loading import load_model
        model, meta = load_model(args.model, weights=args.weights, num_classes=args.num_classes)
        tokenizer = None
    pruned = prune(model, blocks)  # raises UserError on bad blocks before anything is written
    from .adapters import view
    v = view(model)
    removed = sorted({next(b.index for b in v.blocks if s in (str(b.index), b.name)) for s in blocks})
    info = {"pruned_from": meta, "removed": removed, "removed_names": [v.blocks[i].name for i in removed],
            "blocks_before": len(v), "blocks_after": len(v) - len(removed), "reason": "--blocks"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prune-", dir=out.parent))  # renamed into place when complete
    try:
        if hf:
            pruned.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        else:
            from safetensors.torch import save_file
            save_file({k: t.contiguous() for k, t in pruned.state_dict().items()}, tmp / "model.safetensors")
        (tmp / "respaths_prune.json").write_text(json.dumps(info, indent=1))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"removed blocks {removed} of {len(v)}; wrote {out}")
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
    "demo": (demo_args, demo_run, "the quick study on Fashion-MNIST into ./respaths-demo, in minutes on a CPU"),
    "report": (report_args, report_run, "rebuild the HTML report from the results of one or more runs"),
    "prune": (prune_args, prune_run, "export a model with blocks really removed (loads and runs on its own)"),
    "layers": (layers_args, layers_run, "which transformer layers matter: Block Influence, angular "
                                        "distance, greedy pruning, painters variants"),
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
        from .distributed import launched
        if launched() and args.command not in ("train", "lesion", "reorder", "paths"):
            raise UserError(f"respaths {args.command} does not split its work across ranks; run it without torchrun "
                            f"(train, lesion, reorder and paths do run under torchrun).")
        return int(args.func(args) or 0)
    except UserError as e:  # bad input: one sentence; anything else is a bug and shows its traceback
        if os.environ.get("RESPATHS_DEBUG"):
            raise
        msg = " ".join(str(e.args[0] if e.args else e).split())
        print(f"respaths {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # permission, no space, not a directory: name the path and the reason
        if os.environ.get("RESPATHS_DEBUG"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        reason = e.strerror or str(e)
        print(f"respaths {args.command}: error: {where}{reason}; check the path and try again.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"respaths {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
