"""The lesion and reorder experiments: plans, records, result files, resume after kill -9, CLI."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file
from scipy import stats as scipy_stats

import respaths
from respaths import cli
from respaths.core import UserError
from respaths.experiments.lesion import lesion_single, lesioned_model, random_plans, reorder, reorder_plans

from tests.helpers import data, evaluate_with_cli, tiny


def naive_errors(model, plan, x, y, batch):
    twin = lesioned_model(model, plan, x[:2]).eval()
    with torch.inference_mode():
        return sum(int((twin(x[s:s + batch]).argmax(1) != y[s:s + batch]).sum()) for s in range(0, len(x), batch))


def test_single_deletion_records():
    model = tiny("resnet20")
    x, y = data(32)
    view = respaths.view(model, x[:2])
    records = lesion_single(view, (x, y), batch_size=16)
    assert [r["key"] for r in records] == ["baseline"] + [f"single {i}" for i in range(len(view))]
    base = records[0]
    for r in records:
        plan = respaths.delete_blocks(len(view), r["deleted"])
        assert r["errors"] == naive_errors(model, plan, x, y, 16), r["key"]
        assert r["n"] == 32 and r["error"] == r["errors"] / 32
        assert r["error_ci"][0] <= r["error"] <= r["error_ci"][1]
        assert r["delta"] == pytest.approx(r["error"] - base["error"])
        assert r["delta_ci"][0] <= r["delta"] <= r["delta_ci"][1]
        assert r["newly_wrong"] - r["newly_right"] == r["errors"] - base["errors"]
        assert r["seconds"] > 0
    assert len({r["errors"] for r in records}) > 2


def test_random_sets_are_seeded_and_deletable_only():
    model = tiny("vgg15")
    view = respaths.view(model, torch.randn(1, 3, 16, 16))
    specs = random_plans(view, [1, 3, 5], samples=4, seed=7)
    assert len(specs) == 12
    for sp in specs:
        fields, plan = sp.record, sp.plan
        assert len(set(fields["deleted"])) == fields["k"] == len(plan.deleted)
        assert set(fields["deleted"]) <= set(view.deletable)  # never a shape-changing plain layer
        assert fields["deleted"] == sorted(fields["deleted"])
    again = random_plans(view, [3], samples=4, seed=7)  # a set depends on (seed, k, sample) only
    assert [sp.record["deleted"] for sp in again] == [sp.record["deleted"] for sp in specs if sp.record["k"] == 3]
    other = random_plans(view, [3], samples=4, seed=8)
    assert [sp.record["deleted"] for sp in other] != [sp.record["deleted"] for sp in again]
    with pytest.raises(UserError, match="deletable blocks"):
        random_plans(view, [len(view.deletable) + 1], 1, 0)


def test_reorder_swaps_only_compatible_blocks():
    model = tiny("preresnet20")
    x, y = data(16)
    view = respaths.view(model, x[:2])
    pairs = set(view.swappable_pairs())
    specs = reorder_plans(view, [1, 2, 4], samples=3, seed=0)
    for sp in specs:
        fields, plan = sp.record, sp.plan
        order = fields["order"]
        assert sorted(order) == list(range(len(view))) and plan.order == order
        assert all(tuple(p) in pairs for p in fields["swaps"]) and len(fields["swaps"]) == fields["k"]
        for pos, b in enumerate(order):  # never across a shape change
            assert view.blocks[b].in_shape == view.blocks[pos].in_shape
            assert view.blocks[b].out_shape == view.blocks[pos].out_shape
        assert fields["kendall_tau"] == pytest.approx(scipy_stats.kendalltau(range(len(order)), order).statistic)
        assert fields["kendall_tau"] < 1.0
    one = next(sp.record for sp in specs if sp.record["k"] == 1)
    a, b = one["swaps"][0]
    n, d = len(view), abs(a - b)  # one swap at distance d inverts 2d - 1 of the n(n-1)/2 pairs
    assert one["kendall_tau"] == pytest.approx(1 - 2 * (2 * d - 1) / (n * (n - 1) / 2))
    records = reorder(view, (x, y), k="1-2", samples=2, batch_size=8)
    for r in records[1:]:
        assert r["errors"] == naive_errors(model, respaths.reorder_blocks(r["order"]), x, y, 8)
    with pytest.raises(UserError, match="compatible shapes"):
        reorder_plans(view, [len(pairs) + 1], 1, 0)


def without_seconds(path):
    doc = json.loads(open(path).read())
    for r in doc["records"]:
        r.pop("seconds")
    return doc


def test_kill_minus_9_then_resume_gives_the_same_file(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_file(respaths.build_model("resnet20", in_channels=3).state_dict(), str(weights))
    args = ["lesion", "--model", "respaths:resnet20", "--weights", str(weights), "--dataset", "synthetic",
            "--limit", "32", "--mode", "random", "--k", "1-4", "--samples", "5", "--chunk", "1",
            "--batch-size", "16"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RESPATHS_NO_DOWNLOAD": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "respaths.cli", *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = killed / "lesion-random.partial.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 5:  # header, baseline, 3 records
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "lesion-random.json").exists()
    kept = {json.loads(l)["key"]: json.loads(l) for l in journal.read_text().splitlines()[1:] if l.endswith("}")}
    assert 3 <= len(kept) < 21

    assert cli.main([*args, "--out", str(killed)]) == 0  # resume
    whole = tmp_path / "whole"
    assert cli.main([*args, "--out", str(whole)]) == 0  # the same command, never interrupted
    resumed = json.loads((killed / "lesion-random.json").read_text())
    for r in resumed["records"]:
        if r["key"] in kept:
            assert r == kept[r["key"]]  # finished before the kill: kept, not computed again
    assert len(resumed["records"]) == 21 and not journal.exists()
    assert without_seconds(killed / "lesion-random.json") == without_seconds(whole / "lesion-random.json")
    strip = lambda p: [l.rsplit(",", 1)[0] for l in p.read_text().splitlines()]  # seconds is the last column
    assert strip(killed / "lesion-random.csv") == strip(whole / "lesion-random.csv")
    before = (whole / "lesion-random.json").read_text()
    assert cli.main([*args, "--out", str(whole)]) == 0  # finished: nothing recomputed, same file
    assert (whole / "lesion-random.json").read_text() == before


def test_cli_reorder_and_errors(tmp_path, capsys):
    out = tmp_path / "r"
    common = ["--model", "respaths:preresnet20", "--dataset", "synthetic", "--limit", "16", "--out", str(out)]
    assert cli.main(["reorder", *common, "--k", "1,2", "--samples", "2"]) == 0
    doc = json.loads((out / "reorder.json").read_text())
    assert doc["meta"]["experiment"] == "reorder" and doc["meta"]["dataset"] == {"name": "synthetic", "n_images": 16}
    assert len(doc["meta"]["blocks"]) == 9 and doc["baseline"]["n"] == 16
    assert [r["kind"] for r in doc["records"]] == ["baseline"] + ["reorder"] * 4
    assert "wrote" in capsys.readouterr().out
    assert cli.main(["reorder", *common, "--k", "1-50"]) == 2
    assert "choose k between 1 and" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # the model positionally and as --model: given twice
        cli.main(["lesion", "somewhere", *common])
    assert e.value.code == 2 and "two models given" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # refused by argparse, before any work
        cli.main(["lesion", *common, "--mode", "random", "--k", "x"])
    assert e.value.code == 2 and "expected a rising range" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# ImageNet scale: torchvision ResNet-50/101/152, an ImageFolder, weights from a local file

@pytest.mark.parametrize("name,blocks", [("resnet50", 16), ("resnet101", 33), ("resnet152", 50)])
def test_torchvision_resnets_lesion_exactly(name, blocks):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.get_model(name, weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)  # small images keep ResNet-152 cheap; the blocks are the same
    y = torch.tensor([1, 2])
    view = respaths.view(model, x)
    assert len(view) == blocks and view.adapter == "torchvision"
    from respaths.engine import evaluate_plans
    plans = [respaths.full_plan(blocks)] + [sp.plan for sp in random_plans(view, [5], 1, seed=3)]
    plans += [sp.plan for sp in reorder_plans(view, [2], 1, seed=3)]
    results = evaluate_plans(view, (x, y), plans, batch_size=2, keep_logits=True)
    with torch.inference_mode():
        assert torch.equal(results[0].examples["logits"], model(x))  # the view is the model
        for plan, r in zip(plans[1:], results[1:]):
            assert torch.equal(r.examples["logits"], lesioned_model(model, plan, x).eval()(x)), plan.key()
            assert not torch.equal(r.examples["logits"], results[0].examples["logits"])


def test_imagefolder_with_a_torchvision_resnet50_from_a_weights_file(tmp_path):
    tv = pytest.importorskip("torchvision")
    Image = pytest.importorskip("PIL.Image")
    from respaths.data import load_dataset
    g = torch.Generator().manual_seed(0)
    for c, cls in enumerate(["n01440764", "n01443537"]):  # ImageNet-style class folders under val/
        (tmp_path / "imnet" / "val" / cls).mkdir(parents=True)
        for i in range(1):
            pixels = torch.randint(0, 256, (240 + 40 * c, 300, 3), generator=g, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(tmp_path / "imnet" / "val" / cls / f"{i}.png")
    torch.manual_seed(0)
    model = tv.models.resnet50(weights=None).eval()
    weights = tmp_path / "resnet50.safetensors"
    save_file(model.state_dict(), str(weights))
    folder = f"imagefolder:{tmp_path / 'imnet'}"
    out = tmp_path / "out"
    assert cli.main(["lesion", "--model", "torchvision:resnet50", "--weights", str(weights), "--dataset", folder,
                     "--mode", "random", "--k", "3", "--samples", "1", "--batch-size", "4", "--out", str(out)]) == 0
    doc = json.loads((out / "lesion-random.json").read_text())
    assert doc["meta"]["dataset"]["n_images"] == 2 and len(doc["meta"]["blocks"]) == 16
    assert doc["meta"]["blocks"][0]["in_shape"] == [64, 56, 56]  # resized to 256, centre-cropped to 224
    assert doc["meta"]["source"] == {"model": "torchvision:resnet50", "weights": str(weights)}
    data = load_dataset(folder)
    assert data.images.shape == (2, 3, 224, 224) and data.labels.tolist() == [0, 1]
    from respaths.engine import iterate_batches
    x, y = next(iterate_batches(data, 2, torch.device("cpu")))
    with torch.inference_mode():
        logits = model(x)
        base = int((logits.argmax(1) != y).sum())
        assert doc["baseline"]["errors"] == base  # the file's baseline is the model's own forward
        r = doc["records"][1]
        twin = lesioned_model(model, respaths.delete_blocks(16, r["deleted"]), x).eval()
        assert r["errors"] == int((twin(x).argmax(1) != y).sum()) and r["k"] == 3


# ---------------------------------------------------------------------------------------------
# What a user does: `respaths train`, then lesion and reorder on the run directory it wrote

def test_train_then_lesion_and_reorder_the_run_directory(tmp_path, capsys):
    from respaths.io.checkpoint import load_checkpoint
    from respaths.data import load_dataset, normalize
    run = tmp_path / "run"
    assert cli.main(["train", "--model", "preresnet20", "--width", "0.5", "--dataset", "synthetic",
                     "--epochs", "3", "--schedule", "cosine", "--limit-train", "512", "--limit-test", "64", "--batch-size", "32",
                     "--threads", "1", "--out", str(run), "--no-progress", "--quiet"]) == 0
    common = ["--limit", "64", "--batch-size", "16"]
    assert cli.main(["lesion", str(run), "--mode", "single", *common, "--out", str(tmp_path / "l")]) == 0
    assert cli.main(["reorder", str(run), "--k", "1,2", "--samples", "2", *common,
                     "--out", str(tmp_path / "r")]) == 0
    single = json.loads((tmp_path / "l" / "lesion-single.json").read_text())
    assert single["meta"]["dataset"] == {"name": "synthetic", "n_images": 64}
    model, meta = load_checkpoint(run / "checkpoint")
    # the baseline is the trained model's own test error, and each deletion equals the naive twin's
    assert single["baseline"]["error"] == pytest.approx(
        evaluate_with_cli(run, capsys, "--limit", 64)["error"], abs=1e-9)
    test = load_dataset("synthetic", split="test", limit=64)
    x = normalize(test.images, tuple(meta["dataset"]["mean"]), tuple(meta["dataset"]["std"]))
    records = [r for r in single["records"] if r["kind"] == "single"]
    assert len(records) == 9 and single["baseline"]["error"] < 0.5  # it learned (chance: 0.9)
    for r in records:
        assert r["error"] * 64 == naive_errors(model.eval(), respaths.delete_blocks(9, r["deleted"]),
                                               x, test.labels, 16)
    reordered = json.loads((tmp_path / "r" / "reorder.json").read_text())
    assert reordered["baseline"]["error"] == single["baseline"]["error"]
    assert [r["kind"] for r in reordered["records"]] == ["baseline"] + ["reorder"] * 4


def test_module_factory_is_found_in_the_working_directory(tmp_path):
    """`--model mymodels:net` imports mymodels.py from where the user runs the command (the installed
    `respaths` script, whose own directory is first on its import path)."""
    import subprocess
    import sys
    from pathlib import Path
    script = Path(sys.executable).with_name("respaths")
    if not script.is_file():
        pytest.skip("no installed respaths script beside this python")
    (tmp_path / "mymodels.py").write_text("import respaths\n\ndef net(num_classes=10):\n"
                                         "    return respaths.build_model('resnet8', width=0.25, num_classes=num_classes)\n")
    run = subprocess.run([str(script), "lesion", "--model", "mymodels:net", "--dataset", "synthetic", "--limit", "16",
                          "--out", "runs", "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "runs" / "lesion-single.json").is_file()


def test_random_sets_and_orders_are_distinct_and_all_used_when_few_exist(tmp_path, capsys):
    """A mean with an interval over repeated draws of one configuration counts one sample twice: the
    samples of one k differ, and where fewer exist than asked, every one is run and the meta says so."""
    import itertools
    import math

    from respaths import cli
    from respaths.experiments.lesion import distinct_orders, swapped_order
    view = respaths.view(tiny("resnet20"), torch.randn(1, 3, 16, 16))
    n, pool, pairs = len(view), view.deletable, view.swappable_pairs()
    sets = random_plans(view, [1, 2, n - 1], samples=50, seed=3)
    for k in (1, 2, n - 1):
        got = [tuple(sp.record["deleted"]) for sp in sets if sp.record["k"] == k]
        assert len(got) == len(set(got)) == min(50, math.comb(len(pool), k))
    # the orders of k swaps, counted by brute force over every sequence of k distinct pairs
    for k in (1, 2):
        brute = {tuple(swapped_order(n, seq)) for seq in itertools.permutations(pairs, k)}
        assert distinct_orders(n, pairs, k) == len(brute)
        got = [tuple(sp.record["order"]) for sp in reorder_plans(view, [k], samples=500, seed=1)]
        assert len(got) == len(set(got)) == len(brute) and set(got) == brute
    # through the command line: the meta records asked / exist / drawn, and the output says all were run
    out = tmp_path / "out"
    assert cli.main(["lesion", "--model", "respaths:resnet8", "--dataset", "synthetic", "--limit", "16", "--mode",
                     "random", "--k", "1,2", "--samples", "5", "--out", str(out), "--no-figure",
                     "--no-progress"]) == 0
    meta = json.loads((out / "lesion-random.json").read_text())["meta"]["params"]["configurations"]
    assert meta == [{"k": 1, "asked": 5, "exist": 3, "drawn": 3}, {"k": 2, "asked": 5, "exist": 3, "drawn": 3}]
    assert "only 3 distinct configurations exist" in capsys.readouterr().out
