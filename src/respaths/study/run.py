"""The paper's test-time study on models already trained: `respaths study`, and the second half of
`respaths reproduce` (which trains its nets first, then runs this same code).

    respaths study respaths:resnet32 --weights resnet32-d509ac18.th --dataset cifar10 --out runs/r32

On the net under study (role "resnet", as in the report) it runs, each step skipped when its result
is there and the lesion and path steps resumed from their journals:

  compare        single deletion and random-k deletion (respaths.experiments.compare: with --compare nets, their
                 test errors compared image by image): results/compare/
  single-<role>  single deletion of each compared plain net (a VGG: fig. 3's right panel)
  reorder        k random swaps of compatible blocks against Kendall tau: results/reorder-resnet
  paths          path gradients by length on seeded training batches: results/paths-resnet
  surviving      surviving paths counted from the lesions against C(n-d, x)/C(n, x)

Compared nets are named by role: `vgg` (a plain net) joins fig. 3, `stochastic` (the same net trained
with stochastic depth) and `fixed` (trained with fixed m) join fig. 8 and their claims; the training
claims are judged only for nets whose training respaths saw converge, so for brought nets they read
inconclusive or not run. A Hugging Face model directory with --text is studied alone, each
experiment scored by its metric (text_experiments). The run directory is reproduce's without
models/: run.json, results/, figures/ and report.html (respaths.io.layout names each file).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from ..experiments import lesion
from .. import paths
from ..experiments.compare import compare_views
from ..core import UserError
from ..drawing import save
from ..data.batches import batches
from ..data.sources import load_dataset
from ..engine.options import EngineOptions
from ..metrics import metric_named
from ..opening import open_model, source_of
from ..paths.experiment import run_path_gradients
from .read import load_result, train_losses
from .report import build, make_figures
from ..io.layout import ResultFolder, RunLayout, json_of
from ..io.results import ResultStore
from .run_record import RunRecord, cpu_time


@dataclass(frozen=True)
class Budget:
    """How much of each experiment: the sizes the paper used ("paper") or a CPU-minutes cut ("quick")."""

    name: str
    test_limit: int | None       # test images (None: all)
    random_k: tuple[int, ...]    # numbers of randomly deleted blocks (kept below the deletable blocks)
    random_samples: int
    reorder_k: tuple[int, ...]   # numbers of swapped pairs (kept at most the swappable pairs)
    reorder_samples: int
    path_samples: int            # sampled paths per length (the paper: 1,000)
    path_batches: int            # training batches the path gradients are averaged over
    path_batch_size: int
    eval_batch_size: int = 500
    fast: bool = False           # the lesion engine's BN folding + channels_last (changes rounding only)
    seed: int = 0
    train_limit: int | None = None  # the training images the path batches are drawn from (None: all)


BUDGETS = {
    "quick": Budget("quick", test_limit=1000, random_k=(1, 2, 4, 6, 8, 10, 12, 16, 20), random_samples=4,
                    reorder_k=(1, 2, 4, 6, 8, 10, 12, 16, 20), reorder_samples=3, path_samples=24, path_batches=1,
                    path_batch_size=32, fast=True),
    "paper": Budget("paper", test_limit=None, random_k=tuple(range(1, 21)), random_samples=20,
                    reorder_k=tuple(range(1, 21)), reorder_samples=20, path_samples=1000, path_batches=4,
                    path_batch_size=128),
}


def budget(name: str | Budget, **changes: Any) -> Budget:
    """A budget by name (or as given), with the changes that are not None."""
    if isinstance(name, Budget):
        return replace(name, **{k: v for k, v in changes.items() if v is not None})
    if name not in BUDGETS:
        raise UserError(f"unknown budget {name!r}; choose quick or paper.")
    return replace(BUDGETS[name], **{k: v for k, v in changes.items() if v is not None})


@dataclass
class StudiedNet:
    """One net of the study: its view, the test images (or text batches) as it expects them, and what is
    known of it."""

    role: str
    label: str
    view: Any
    model: torch.nn.Module
    test: Any             # a Dataset of images, or a list of text batches
    meta: dict[str, Any]  # recorded in each of its result files (where it came from, preprocessing)
    training: dict[str, Any] = field(default_factory=dict)  # epochs, seconds, train_loss (None: not trained here)
    opened: Any = None    # a transformer's OpenedModel (its path gradients read its batches and metric)

    @property
    def reads_text(self) -> bool:
        return isinstance(self.test, list)

    @property
    def brought_meta(self) -> dict[str, Any] | None:
        """What every result file of a brought net records (source, preprocessing, fingerprint); None for
        the nets reproduce trained, whose result files stay as earlier versions wrote them."""
        return self.meta if "preprocessing" in self.meta else None

    def record(self) -> dict[str, Any]:
        """The net as run.json lists it (what the report's models table and claims read)."""
        config = getattr(self.model, "config", {})
        config = config if isinstance(config, dict) else {}
        return {"name": self.view.name, "label": self.label, "blocks": len(self.view),
                "downsample": [b.downsample for b in self.view.blocks],
                "parameters": sum(t.numel() for t in self.model.parameters()),
                "fixed_m": config.get("fixed_m"), "stochastic_depth": config.get("stochastic_depth"),
                "training": {"epochs": None, "seconds": None, "train_loss": None, **self.training},
                "source": self.meta.get("source")}


def residual(net: StudiedNet) -> bool:
    return any(b.residual for b in net.view.blocks)


# ---------------------------------------------------------------------------------------------
# The steps


def path_gradients(view: Any, train_set: Any, prefix: Path, b: Budget, device: torch.device, progress: bool,
                   meta: dict[str, Any] | None = None) -> None:
    """The paper's path-gradient protocol for every length 0..n on the first seeded training batches."""
    gen = torch.Generator().manual_seed(b.seed)
    data = [x for _, x in zip(range(b.path_batches),
                              batches(train_set, b.path_batch_size, device, train=True, generator=gen))]
    run_meta = {"model": view.name, "dataset": train_set.name, "split": "train", "batch_size": b.path_batch_size,
                "batches": len(data), "n_images": sum(len(y) for _, y in data), **(meta or {})}
    run_path_gradients(view, data, str(prefix), run_meta, range(len(view) + 1), samples=b.path_samples,
                       seed=b.seed, progress=progress)


def surviving_check(n: int, random_json: Path, prefix: Path) -> None:
    """C(n-d, x)/C(n, x) against the paths counted from every lesion the random-deletion step ran."""
    records = [r for r in json.loads(random_json.read_text())["records"] if r.get("kind") == "random"]
    store = ResultStore(prefix, {"experiment": "surviving-paths", "blocks": n, "lesions": str(random_json.name)})
    for row in paths.check_surviving(n, records):
        store.append(row)
    store.finish()


def run_experiments(out: Path, nets: dict[str, StudiedNet], train_set: Any, b: Budget, *, device: torch.device,
                    step: Callable[[str, bool, Callable[[], Any], str], None], progress: bool = True,
                    log: Callable[[str], None] = print) -> None:
    """Every test-time experiment of the paper on nets["resnet"] (and the compared nets) into out/results:
    step(name, done, run, what) runs each one not done yet. An image classifier's are
    image_experiments', a transformer's text_experiments'."""
    if nets["resnet"].reads_text:
        text_experiments(RunLayout(out), nets["resnet"], b, device=device, step=step, progress=progress, log=log)
    else:
        image_experiments(RunLayout(out), nets, train_set, b, device=device, step=step, progress=progress)


def image_experiments(run: RunLayout, nets: dict[str, StudiedNet], train_set: Any, b: Budget, *,
                      device: torch.device, step: Callable[[str, bool, Callable[[], Any], str], None],
                      progress: bool) -> None:
    """compare (single and random deletion of the nets with shortcuts, paired), single deletion of the
    others, reorder, path gradients on train_set and the surviving-paths check, into results/."""
    main = nets["resnet"]
    n = len(main.view)
    opts = dict(batch_size=b.eval_batch_size, device=device, progress=progress, engine=EngineOptions(fast=b.fast))
    deletable = len(main.view.deletable)
    random_k = [k for k in b.random_k if k < deletable] or [1]
    with_shortcuts = {r: net for r, net in nets.items() if residual(net)}
    done = run.compare_json.exists()
    step("compare", done,
         lambda: compare_views(with_shortcuts, out=run.compare, reference="resnet", k=random_k,
                               samples=b.random_samples, seed=b.seed, **opts),
         "single and random deletion" + (f" of {', '.join(with_shortcuts)}" if len(with_shortcuts) > 1 else "")
         + kept(done, run.compared_results(), "plans"))
    for role, net in nets.items():
        if role not in with_shortcuts:
            done = json_of(run.single(role)).exists()
            step(f"single {role}", done,
                 lambda net=net: lesion.lesion_single(net.view, net.test, out=str(run.single(net.role)),
                                                      seed=b.seed, meta=net.brought_meta,
                                                      desc=f"single deletion, {net.role}", **opts),
                 f"single deletion, {role}" + kept(done, [json_of(run.single(role))], "plans"))
    pairs = len(main.view.swappable_pairs())
    ks = [k for k in b.reorder_k if k <= pairs]
    if ks:
        done = json_of(run.reorder("resnet")).exists()
        step("reorder resnet", done,
             lambda: lesion.reorder(main.view, main.test, k=ks, samples=b.reorder_samples, seed=b.seed,
                                    out=str(run.reorder("resnet")), meta=main.brought_meta,
                                    desc="reordering blocks", **opts),
             "reordering blocks" + kept(done, [json_of(run.reorder("resnet"))], "plans"))
    done = json_of(run.paths("resnet")).exists()
    step("paths resnet", done,
         lambda: path_gradients(main.view, train_set, run.paths("resnet"), b, device, progress,
                                meta=main.brought_meta),
         f"path gradients ({b.path_samples} paths per length, {n + 1} lengths)"
         + kept(done, [json_of(run.paths("resnet"))], "lengths"))
    done = json_of(run.surviving("resnet")).exists()
    step("surviving resnet", done,
         lambda: surviving_check(n, json_of(run.compared("resnet", "random")), run.surviving("resnet")),
         "surviving paths checked against the lesions" + kept(done, [json_of(run.surviving("resnet"))], "lesions"))


def text_experiments(run: RunLayout, net: StudiedNet, b: Budget, *, device: torch.device,
                     step: Callable[[str, bool, Callable[[], Any], str], None], progress: bool,
                     log: Callable[[str], None]) -> None:
    """A transformer's: single deletion, random-k deletion, reordering, path gradients (decoders: of the
    LM loss at the first block's input; classifiers: of the cross-entropy) and the surviving-paths
    check, each scored by the model's metric, into results/ as a result folder."""
    view, data, metric = net.view, net.test, net.opened.metric
    res = run.folder
    res.dir.mkdir(parents=True, exist_ok=True)
    n, deletable, pairs = len(view), len(view.deletable), len(view.swappable_pairs())
    random_k = [k for k in b.random_k if k < deletable] or [1]
    reorder_k = [k for k in b.reorder_k if k <= pairs]
    opts = dict(device=str(device), progress=progress, meta=net.meta)

    def step_of(name: str, prefix: Path, fn: Callable[[], Any], what: str, unit: str = "plans") -> None:
        done = json_of(prefix).exists()
        step(name, done, fn, what + kept(done, [json_of(prefix)], unit))

    step_of("single", res.lesion("single"),
            lambda: lesion.lesion_single(view, data, out=str(res.lesion("single")), **opts), "single deletion")
    step_of("random", res.lesion("random"),
            lambda: lesion.lesion_random(view, data, k=random_k, samples=b.random_samples, seed=b.seed,
                                         out=str(res.lesion("random")), **opts), "random deletion")
    if reorder_k:
        step_of("reorder", res.reorder,
                lambda: lesion.reorder(view, data, k=reorder_k, samples=b.reorder_samples, seed=b.seed,
                                       out=str(res.reorder), **opts), "reordering blocks")
    if not metric_named(metric).path_loss:  # an encoder's cosine has none (paths.text_batches_for_paths)
        log("[respaths] path gradients: skipped; an encoder's embedding cosine to the full model has no gradient "
            "at the full model (run the study on a decoder for them)")
        return
    step_of("paths", res.paths,
            lambda: paths.text_paths(net.opened, out=str(res.dir), samples=b.path_samples, lengths="all",
                                     batches=b.path_batches, seed=b.seed, share=0.9, chunk=None, force=False,
                                     progress=progress, device=device),
            f"path gradients of the {metric_named(metric).label} ({b.path_samples} paths per length)", "lengths")
    step_of("surviving resnet", run.surviving("resnet"),
            lambda: surviving_check(n, json_of(res.lesion("random")), run.surviving("resnet")),
            "surviving paths checked against the lesions", "lesions")


def kept(done: bool, files: list[Path], unit: str) -> str:
    """How much a finished step holds, for its "already done, kept" line: " (N/N plans)" ("" if not done)."""
    if not done:
        return ""
    n = 0
    for f in files:
        try:
            n += len(json.loads(f.read_text(encoding="utf-8"))["records"])
        except (OSError, ValueError, KeyError, TypeError):  # damaged: the report's reader says so
            pass
    return f" ({n}/{n} {unit})"

# ---------------------------------------------------------------------------------------------
# respaths study


def finish_run(run: RunRecord, out: Path, report: bool, started: float | None = None) -> Path:
    """Mark the run finished (and this call's wall time since `started`, where given), then write its
    report; returns the report's path, or the run directory without one."""
    run.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if started is not None:
        run.data["seconds_this_call"] = round(time.perf_counter() - started, 1)
    run.save()
    if not report:
        return out
    t, c = time.perf_counter(), cpu_time()
    path = build([out])
    run.step("report", time.perf_counter() - t, cpu_time() - c, accumulate=False)
    return path


@dataclass(frozen=True)
class StudySettings:
    """What run.json records as the run's settings (a rerun with other settings is refused)."""

    name: str
    description: str
    models: dict[str, Any]
    dataset: str
    budget: dict[str, Any]
    seed: int = 0

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def open_net(role: str, model: str, weights: str | None, options: dict[str, Any],
             device: str) -> tuple[StudiedNet, Any]:
    opened = open_model(model, weights=weights, device=device, **options)
    if isinstance(opened.data, list) or opened.metric != "classifier":
        raise UserError("respaths study runs on image classifiers for now; for a transformer use respaths layers.")
    d = opened.description
    src = d["source"]
    label = src.get("checkpoint") or src.get("model")
    if src.get("weights"):
        label = f"{label} ({Path(src['weights']).name})"
    net = StudiedNet(role, str(label), opened.view, opened.model, opened.data,
              {"source": src, "preprocessing": d["preprocessing"], "fingerprint": d["fingerprint"]})
    # a net respaths trained (a `respaths train` directory) keeps its training losses, so that the report can
    # tell whether it converged before judging the paper's claims on it
    ckpt = Path(src["checkpoint"]) if src.get("checkpoint") else None
    run_dir = ckpt.parent if ckpt is not None and ckpt.name == "checkpoint" else ckpt  # the run dir or its checkpoint/
    losses = train_losses(run_dir) if run_dir is not None and run_dir.is_dir() else None
    if losses:
        net.training = {"epochs": len(losses), "train_loss": losses}
    return net, opened


def parse_compare(items: list[str] | None) -> dict[str, tuple[str, str | None]]:
    """--compare NAME=MODEL[@WEIGHTS] ... -> {NAME: (MODEL, WEIGHTS)}."""
    out: dict[str, tuple[str, str | None]] = {}
    for item in items or []:
        name, sep, rest = item.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise UserError(f"--compare {item!r} is not NAME=MODEL; give e.g. vgg=runs/vgg or "
                            f"stochastic=respaths:resnet20@sd.safetensors.")
        name = name.strip()
        if name == "resnet" or name in out:
            raise UserError(f"--compare name {name!r} is taken; give each compared model its own name (not resnet).")
        model, _, weights = rest.partition("@")
        out[name] = (model.strip(), weights.strip() or None)
    return out


def study(model: str, out: str | Path, *, weights: str | None = None, compare: list[str] | None = None,
          budget_name: str | Budget = "quick", limit: int | None = None, seed: int = 0, device: str = "cpu",
          data_dir: str | None = None, force: bool = False, progress: bool = True, report: bool = True,
          fast: bool | None = None, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
          text: str | None = None, seq_len: int = 128, batch_size: int = 8, **open_options: Any) -> Path:
    """`respaths study`: open the model and the compared ones, run every test-time experiment on them
    (run_experiments), write the report; returns its path.

    An image classifier (a respaths checkpoint or run directory, or a model spec) is tested on its
    dataset's test images, with --compare nets beside it. A Hugging Face model directory reads --text
    FILE and is studied alone, each experiment scored by its metric (LM loss and perplexity, or
    embedding cosine); run.json records the metric and its chance (ln V for a decoder), which the
    report's figures and verdicts read. --limit counts test images, or text examples (windows of
    --seq-len tokens for decoders, lines for encoders)."""
    if source_of(model).reads == "text":
        b = budget(budget_name, seed=seed)  # a transformer's lesions run exact: --fast does not apply
        subject = open_text(model, weights=weights, compare=compare, text=text, seq_len=seq_len,
                            batch_size=batch_size, limit=limit, device=device, image_options=open_options)
    else:
        if text is not None:
            raise UserError("--text is for Hugging Face model directories; an image model takes --dataset.")
        b = budget(budget_name, seed=seed, fast=fast)
        b = replace(b, test_limit=limit or b.test_limit)
        subject = open_images(model, b, weights=weights, compare=compare, device=device, data_dir=data_dir,
                              open_options=open_options)
    out = Path(out)
    run = RunRecord(out, subject.settings(b, seed), force)
    run.data["kind"] = "study"
    for note in subject.warnings:
        log(f"warning: {note}.")
    run.data.update(subject.record)
    run.save()
    start = time.perf_counter()
    run_experiments(out, subject.nets, subject.train_set, b, device=torch.device(device),
                    step=lambda name, done, fn, what: run.run_step(name, done, fn, what, log), progress=progress,
                    log=log)
    return finish_run(run, out, report, start)


@dataclass
class Subject:
    """What `respaths study` opened: the nets (role "resnet" the one under study), the training images
    its path gradients are measured on (images), and what run.json says of them."""

    nets: dict[str, StudiedNet]
    train_set: Any
    description: str         # run.json's settings: "... of <model>"
    dataset: str             # run.json's settings: the dataset's name, or "text"
    record: dict[str, Any]   # run.json's "metric" (text), "models" and "dataset"
    warnings: list[str] = field(default_factory=list)

    def settings(self, b: Budget, seed: int) -> StudySettings:
        return StudySettings(f"study-{b.name}", f"respaths study, {b.name} budget, of {self.description}",
                             {r: n.meta["source"] for r, n in self.nets.items()}, self.dataset,
                             json.loads(json.dumps(dataclasses.asdict(b))), seed)


def open_images(model: str, b: Budget, *, weights: str | None, compare: list[str] | None, device: str,
                data_dir: str | None, open_options: dict[str, Any]) -> Subject:
    """An image classifier and its --compare nets, tested on the same images; the training images."""
    options = dict(open_options, data_dir=data_dir, limit=b.test_limit)
    main, opened = open_net("resnet", model, weights, options, device)
    if not residual(main):
        raise UserError(f"{model} has no residual blocks, so there are no paths to study; give a residual net "
                        f"(compare a plain one with --compare vgg=MODEL).")
    nets = {"resnet": main}
    for role, (m, w) in parse_compare(compare).items():
        other = dict(options, dataset=options.get("dataset") or opened.data.name)
        if source_of(m).holds_weights:  # a checkpoint brings its own model and normalisation: the main net's do not apply
            other = {k: v for k, v in other.items() if k not in ("normalize", "mean", "std", "model_kwargs",
                                                                 "num_classes")}
        nets[role], _ = open_net(role, m, w, other, device)
        if nets[role].test.name != main.test.name or len(nets[role].test) != len(main.test):
            raise UserError(f"--compare {role} is tested on {nets[role].test.name}, not {main.test.name}; "
                            f"compare models of one dataset.")
    # the training images the path gradients are measured on, preprocessed as the test images
    train_set = load_dataset(main.test.name, data_dir, split="train", limit=b.train_limit,
                             image_size=open_options.get("image_size"))
    train_set = replace(train_set, mean=main.test.mean, std=main.test.std)
    record = {"models": {r: n.record() for r, n in nets.items()},
              "dataset": {"name": main.test.name, "num_classes": main.test.num_classes, "n_test": len(main.test),
                          "n_train": len(train_set), "source": getattr(main.test, "source", ""),
                          "preprocessing": main.meta["preprocessing"]}}
    return Subject(nets, train_set, main.label, main.test.name, record, opened.warnings)


def open_text(model: str, *, weights: str | None, compare: list[str] | None, text: str | None, seq_len: int,
              batch_size: int, limit: int | None, device: str, image_options: dict[str, Any]) -> Subject:
    """A Hugging Face model directory and its --text batches, studied alone by its metric."""
    if compare:
        raise UserError("--compare is for image models; a transformer's study has one model.")
    if weights:
        raise UserError("--weights goes with a model spec; a Hugging Face directory holds its own weights.")
    given = [k for k, v in image_options.items() if v not in (None, {}) and k not in ("num_classes", "model_kwargs")]
    if given or image_options.get("num_classes") or image_options.get("model_kwargs"):
        raise UserError("a Hugging Face model directory reads text: give --text FILE, not --dataset, --num-classes, "
                        "--model-kwargs or image preprocessing options.")
    opened = open_model(model, text=text, seq_len=seq_len, batch_size=batch_size, limit=limit, device=device)
    data, metric, d = opened.data, opened.metric, opened.description
    view = lesion.probed(opened.view, data, device)
    if not any(blk.residual for blk in view.blocks):
        raise UserError(f"{model} has no residual blocks, so there are no paths to study.")
    label = f"{Path(model).name} ({d['source']['model_class']})"
    # what each of its result files records of it
    meta = {"source": d["source"], "text": d["text"], "seq_len": seq_len, "text_batch_size": batch_size,
            "fingerprint": d["fingerprint"]}
    net = StudiedNet("resnet", label, view, opened.model, data, meta, opened=opened)
    scored = metric_named(metric)
    record = {"metric": {"name": metric, "label": scored.label, "chance": scored.chance(view)},
              "models": {"resnet": net.record()},
              "dataset": {"name": "text", "text": d["text"], "seq_len": seq_len, "batch_size": batch_size,
                          "n_test": sum(len(x["input_ids"]) for x in data), "batches": len(data)}}
    return Subject({"resnet": net}, None, f"{label} on {Path(text).name}", "text", record, opened.warnings)


def save_result_figure(json_path: str | Path) -> Path | None:
    """Draw the figure of one result file of `respaths lesion`, `reorder` or `paths` beside it
    (PREFIX.png and PREFIX.svg); returns the PNG's path (None where the file has no figure)."""
    json_path = Path(json_path)
    name = json_path.stem
    if name not in ResultFolder.FIGURE_OF:
        return None
    study = load_result(json_path)
    for stem, _, fig in make_figures(study):
        if stem == ResultFolder.FIGURE_OF[name]:
            save(fig, json_path.with_suffix(""))
            return json_path.with_suffix(".png")
    return None
