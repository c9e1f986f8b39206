"""Paths (respaths.paths): counts, the unrolled sum, batched path gradients against a naive autograd
pass, the sampling protocol, effective paths, surviving paths, and `respaths paths`."""
import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import respaths
from respaths import paths
from respaths.core import Block, ResidualView, UserError, delete_blocks


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


# ---------------------------------------------------------------------------------------------
# 1. path lengths and the unrolled sum

def test_path_counts_and_shares():
    assert paths.path_counts(4) == [1, 4, 6, 4, 1]
    assert sum(paths.path_counts(54)) == 2 ** 54  # exact integers
    assert math.isclose(sum(paths.path_fractions(54)), 1.0)
    assert paths.path_share(54, 19, 35) > 0.95  # the paper's section 4
    assert paths.path_share(54, 5, 17) == pytest.approx(0.0045, abs=5e-5)  # 0.45%, the paper's effective paths
    assert paths.path_share(10, 0, 10) == 1.0 and paths.path_share(10, 3, 2) == 0.0


@pytest.mark.parametrize("n", [1, 5, 12])
def test_unrolled_sum_is_the_network(n):
    torch.manual_seed(n)
    ws = [0.3 * torch.randn(6, 6, dtype=torch.float64) for _ in range(n)]
    x = torch.randn(6, 3, dtype=torch.float64)
    unrolled = paths.unrolled_paths(ws, x)
    assert len(unrolled) == 2 ** n
    assert [sum(len(p) == k for p in unrolled) for k in range(n + 1)] == paths.path_counts(n)
    # the same network as a respaths view of blocks y = x + W x
    view = ResidualView(lambda t: t, [Block(branch=(lambda t, w=w: w @ t)) for w in ws], lambda t: t)
    y = view(x)
    assert torch.allclose(paths.linear_residual_forward(ws, x), y, rtol=0, atol=1e-12)
    assert torch.allclose(sum(unrolled.values()), y, rtol=1e-12, atol=1e-12)
    # each path is the product of its branches, in order
    p = tuple(range(0, n, 2))
    expected = x
    for i in p:
        expected = ws[i] @ expected
    assert torch.allclose(unrolled[p], expected, rtol=1e-12, atol=1e-12)
    # and no path can be left out
    if n > 1:
        assert not torch.allclose(sum(v for q, v in unrolled.items() if q != p), y, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 2. path gradients: batched == naive

MODELS = [("resnet14", "A", {}),  # post = ReLU, zero-pad shortcuts at the two downsampling blocks
          ("preresnet14", "A", {}),  # post = identity, the paper's model
          ("resnet14", "B", {}),  # projection (conv + BN) shortcuts
          ("preresnet14", "A", {"stochastic_depth": 0.5})]  # branches scaled by survival at test time


@pytest.mark.parametrize("name,shortcut,options", MODELS)
def test_batched_path_gradients_equal_naive(name, shortcut, options):
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        view, x, y = tiny(name, shortcut, dtype, **options)
        n = len(view)
        gen = torch.Generator().manual_seed(1)
        chosen = torch.cat([paths.sample_paths(n, k, 2, gen) for k in range(n + 1)])
        with paths.frozen(view):
            pg = paths.PathGradients(view, x, y)
            grads = pg.grads(chosen)
            norms = pg.norms(chosen, chunk=5)
            pg.vmap = not pg.vmap  # the other way of applying the vjps (per row on a CPU, vmap elsewhere)
            assert torch.allclose(pg.grads(chosen), grads, rtol=tol, atol=tol * grads.abs().max())
            for j, row in enumerate(chosen):
                naive = paths.naive_path_gradient(view, x, y, row.nonzero().flatten().tolist())
                assert grads[j].shape == naive.shape
                assert torch.allclose(grads[j], naive, rtol=tol, atol=tol * naive.abs().max()), (dtype, j)
                assert norms[j].item() == pytest.approx(naive.norm().item(), rel=tol)
                if j % 7 == 0:  # loss.backward() with weights requiring grad: the same input gradient
                    full = paths.naive_path_gradient(view, x, y, row.nonzero().flatten().tolist(), full_backward=True)
                    assert torch.allclose(full, naive, rtol=tol, atol=tol * naive.abs().max())
                    assert not any(p.requires_grad for p in view.model.parameters())  # frozen again
                    assert all(p.grad is None for p in view.model.parameters())  # the caller's .grad kept
        assert len(set(np.round(norms.numpy(), 8))) > n  # different paths, different gradients


@pytest.mark.parametrize("name,shortcut", [("resnet14", "A"), ("preresnet14", "A"), ("resnet14", "B")])
def test_fast_path_gradients_equal_naive_to_rounding(name, shortcut):
    """--fast (BN folded into convolutions, channels_last) gives the naive pass's gradients to float32
    rounding, and leaves the model as it found it."""
    view, x, y = tiny(name, shortcut)
    n = len(view)
    before = {k: v.clone() for k, v in view.model.state_dict().items()}
    gen = torch.Generator().manual_seed(2)
    chosen = torch.cat([paths.sample_paths(n, k, 2, gen) for k in range(n + 1)])
    with paths.frozen(view):
        with paths.fast_network(view, x):
            folded = sum(isinstance(m, torch.nn.BatchNorm2d) and "forward" in vars(m) for m in view.model.modules())
            pg = paths.PathGradients(view, x, y, channels_last=True)
            assert pg.cotangent.is_contiguous(memory_format=torch.channels_last)
            norms = pg.norms(chosen, chunk=5)
        naive = torch.tensor([paths.naive_path_gradient(view, x, y, row.nonzero().flatten().tolist()).norm().item()
                              for row in chosen], dtype=torch.float64)
    assert folded > 0  # the fast rewrite was really in force
    assert torch.allclose(norms, naive, rtol=1e-4)
    after = view.model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].is_contiguous() for k in before)
    assert not any("forward" in vars(m) for m in view.model.modules())


def test_paths_take_branch_xor_shortcut():
    """Length n is the path through every branch: for a preresnet it is the product of the branch
    Jacobians alone, not the full network's gradient (which sums all 2^n paths)."""
    view, x, y = tiny("preresnet14")
    n = len(view)
    with paths.frozen(view):
        pg = paths.PathGradients(view, x, y)
        grads = pg.grads(torch.tensor([[True] * n, [False] * n]))
        h0 = view.stem(x).detach().requires_grad_()
        with torch.enable_grad():
            h = h0
            for b in view.blocks:
                h = b(h)
            (full,) = torch.autograd.grad(torch.nn.functional.cross_entropy(view.head(h), y), h0)
    assert not torch.allclose(grads[0], full, atol=1e-6)
    assert not torch.allclose(grads[1], full, atol=1e-6)


def test_paths_with_common_suffixes_share_work():
    view, x, y = tiny("resnet14")
    n = len(view)
    with paths.frozen(view):
        pg = paths.PathGradients(view, x, y)
        rows, which = pg.rows(torch.zeros(7, n, dtype=torch.bool))  # seven times the all-shortcut path
        assert len(rows) == 1 and pg.branch_rows == 0
        pg.branch_rows = 0
        rows, which = pg.rows(torch.ones(7, n, dtype=torch.bool))
        assert len(rows) == 1 and pg.branch_rows == n
        pg.branch_rows = 0
        last_only = torch.zeros(2, n, dtype=torch.bool)
        last_only[:, -1] = True
        last_only[1, 0] = True  # differs from path 0 only at block 0
        rows, which = pg.rows(last_only)
        assert pg.branch_rows == 2 and len(rows) == 2  # block n-1 once, block 0 once


def test_plain_layers_are_refused():
    m = respaths.build_model("plain14", in_channels=3, width=0.25).eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(UserError, match="plain layer"):
        paths.PathGradients(respaths.view(m, x), x, torch.zeros(2, dtype=torch.long))


def test_measure_follows_the_protocol():
    """Each record equals the paper's protocol done naively: path j of length k is drawn from the
    length's own stream and backpropagated on batch j mod the number of batches."""
    view, x, y = tiny("resnet14")
    batches = [(x[:2], y[:2]), (x[2:], y[2:])]
    n, samples, seed = len(view), 5, 7
    view.model.train()
    flags = [p.requires_grad for p in view.model.parameters()]
    records = list(paths.measure_path_gradients(view, batches, [0, 3, n], samples=samples, seed=seed, chunk=2))
    assert view.model.training and [p.requires_grad for p in view.model.parameters()] == flags  # restored
    assert [r["key"] for r in records] == ["k000", "k003", f"k{n:03d}"]
    view.model.eval()
    for r in records:
        k = r["length"]
        chosen = paths.sample_paths(n, k, samples, paths.length_generator(seed, k))
        assert (chosen.sum(1) == k).all()
        with paths.frozen(view):
            norms = [paths.naive_path_gradient(view, *batches[j % 2], row.nonzero().flatten().tolist()).norm().item()
                     for j, row in enumerate(chosen)]
        assert r["samples"] == samples and r["paths"] == math.comb(n, k)
        assert r["mean"] == pytest.approx(np.mean(norms), rel=1e-5)
        assert r["std"] == pytest.approx(np.std(norms, ddof=1), rel=1e-4, abs=1e-9)
        assert r["total"] == pytest.approx(math.comb(n, k) * r["mean"])
    # resuming: a skipped length is not computed, the others are the same numbers again
    again = list(paths.measure_path_gradients(view, batches, [0, 3, n], samples=samples, seed=seed, skip=[0]))
    assert [r["mean"] for r in again] == pytest.approx([r["mean"] for r in records[1:]], rel=1e-6)
    with pytest.raises(UserError, match="out of range"):
        list(paths.measure_path_gradients(view, batches, [n + 1], samples=2))


def test_summarize_uses_student_t():
    v = [1.0, 2.0, 4.0, 7.0]
    s = paths.summarize(v, 0.9)
    lo, hi = stats.t.interval(0.9, 3, loc=np.mean(v), scale=np.std(v, ddof=1) / 2)
    assert s["ci"] == pytest.approx([lo, hi]) and s["std"] == pytest.approx(np.std(v, ddof=1))
    assert paths.summarize([3.0, 3.0])["ci"] == [3.0, 3.0]
    assert paths.summarize([3.0])["ci"] == [None, None]


# ---------------------------------------------------------------------------------------------
# 3. effective paths

def test_effective_range():
    totals = {0: 1.0, 1: 5.0, 2: 90.0, 3: 4.0}
    e = paths.effective_range(3, totals, 0.9)
    assert e["lengths"] == [2, 2] and e["gradient_share"] == pytest.approx(0.9)
    assert e["path_share"] == pytest.approx(3 / 8)
    assert paths.effective_range(3, totals, 0.95)["lengths"] == [1, 2]  # 95 beats [2, 3]'s 94
    assert paths.effective_range(3, totals, 1.0)["lengths"] == [0, 3]
    # a paper-like curve: mean norm falling geometrically with length
    n = 54
    totals = paths.total_gradient(n, {k: 0.6 ** k for k in range(n + 1)})
    e = paths.effective_range(n, totals, 0.9)
    lo, hi = e["lengths"]
    assert e["gradient_share"] >= 0.9 and lo < 20 < hi < 35
    for a in range(n + 1):  # no shorter range holds 90%
        b = a + (hi - lo) - 1
        assert sum(totals.get(k, 0.0) for k in range(a, b + 1)) < 0.9 * sum(totals.values())
    with pytest.raises(UserError):
        paths.effective_range(3, totals, 1.5)


# ---------------------------------------------------------------------------------------------
# 4. surviving paths

def test_surviving_counts_by_enumeration():
    n = 8
    rng = np.random.default_rng(0)
    for d in range(n + 1):
        gone = set(rng.choice(n, d, replace=False).tolist())
        counts = paths.count_surviving(delete_blocks(n, gone), n)
        for x in range(n + 1):
            intact = sum(1 for p in itertools.combinations(range(n), x) if not gone & set(p))
            assert counts[x] == intact
            assert intact / math.comb(n, x) == pytest.approx(paths.surviving_fraction(n, d, x), rel=1e-12)


def test_surviving_checked_against_lesion_plans():
    from respaths.experiments.lesion import random_plans
    view, x, _ = tiny("preresnet20")
    n = len(view)
    specs = random_plans(view, [1, 3, 5], samples=3, seed=0)
    rows = paths.check_surviving(n, [sp.record for sp in specs])  # the records the lesion step writes
    rows_from_plans = paths.check_surviving(n, [sp.plan for sp in specs])
    assert len(rows) == 9 and all(r["match"] for r in rows + rows_from_plans)
    assert [r["deleted"] for r in rows] == [1] * 3 + [3] * 3 + [5] * 3
    assert rows[3]["counted"][2] == pytest.approx(math.comb(n - 3, 2) / math.comb(n, 2))
    assert [r["counted"] for r in rows] == [r["counted"] for r in rows_from_plans]  # record == plan run
    assert paths.effective_surviving(54, 0, {10: 1.0, 12: 2.0}, (5, 17)) == 1.0
    assert 0 < paths.effective_surviving(54, 10, {10: 1.0, 12: 2.0}, (5, 17)) < paths.surviving_fraction(54, 10, 5)


# ---------------------------------------------------------------------------------------------
# 6. the command

def test_cli_paths_writes_and_resumes(tmp_path, capsys):
    from respaths.io.checkpoint import save_checkpoint
    from respaths.cli import main
    m = respaths.build_model("resnet14", in_channels=3, num_classes=10, width=0.25)
    save_checkpoint(tmp_path / "ck", m, {"dataset": {"name": "synthetic"}})
    args = ["paths", str(tmp_path / "ck"), "--samples", "4", "--batch-size", "8", "--batches", "2",
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(args + ["--lengths", "0-2"]) == 0
    assert main(args + ["--lengths", "0-6"]) == 0  # resumes: 0-2 are kept, 3-6 added
    doc = json.loads((tmp_path / "out" / "paths.json").read_text())
    assert [r["length"] for r in doc["records"]] == list(range(7))
    assert doc["meta"]["samples"] == 4 and doc["meta"]["n_images"] == 16 and doc["blocks"] == 6
    lo, hi = doc["effective"]["lengths"]
    assert 0 <= lo <= hi <= 6 and doc["effective"]["gradient_share"] >= 0.9
    csv = (tmp_path / "out" / "paths.csv").read_text().splitlines()
    assert len(csv) == 8 and "ci_low" in csv[0] and "total" in csv[0]
    first = (tmp_path / "out" / "paths.json").read_text()
    assert main(args) == 0 and main(args + ["--lengths", "0-6"]) == 0  # all done: the same file
    assert (tmp_path / "out" / "paths.json").read_text() == first
    out = capsys.readouterr().out
    assert "carry" in out and "paths.json" in out
    # a fresh run of some of the lengths gives the same numbers (seconds aside)
    assert main(args[:-4] + ["--out", str(tmp_path / "again"), "--lengths", "2,5", "--device", "cpu"]) == 0
    again = json.loads((tmp_path / "again" / "paths.json").read_text())["records"]
    for r in again:
        same = doc["records"][r["length"]]
        assert {k: v for k, v in r.items() if k != "seconds"} == {k: v for k, v in same.items() if k != "seconds"}
    # --fast: the same numbers to rounding, recorded as such, in its own file
    assert main(args[:-4] + ["--out", str(tmp_path / "fast"), "--lengths", "2,5", "--device", "cpu", "--fast"]) == 0
    fast = json.loads((tmp_path / "fast" / "paths.json").read_text())
    assert fast["meta"]["fast"] is True and "fast" not in doc["meta"]
    for r in fast["records"]:
        assert r["mean"] == pytest.approx(doc["records"][r["length"]]["mean"], rel=1e-4)
    assert main(args[:-4] + ["--out", str(tmp_path / "fast"), "--lengths", "2,5", "--device", "cpu"]) == 2
    assert main(args + ["--samples", "5"]) == 2  # another experiment in the same place
    assert main(args + ["--lengths", "0-9"]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "out of range" in err and "Traceback" not in err


def test_kill_minus_9_then_resume_gives_the_same_file(tmp_path):
    """kill -9 `respaths paths` after a few lengths; the same command again finishes the journal to the
    file an uninterrupted run writes (seconds aside), keeping the lengths measured before the kill."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from respaths.io.checkpoint import save_checkpoint
    from respaths.cli import main
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ck", respaths.build_model("resnet32", in_channels=3, num_classes=10, width=0.25),
                    {"dataset": {"name": "synthetic"}})
    args = ["paths", str(tmp_path / "ck"), "--samples", "20", "--batch-size", "16", "--batches", "2",
            "--chunk", "4", "--device", "cpu", "--no-progress"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RESPATHS_NO_DOWNLOAD": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "respaths.cli", *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = killed / "paths.partial.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 4:  # header and 3 lengths
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "paths.json").exists()
    kept = {json.loads(l)["key"]: json.loads(l) for l in journal.read_text().splitlines()[1:] if l.endswith("}")}
    assert 3 <= len(kept) < 16

    assert main([*args, "--out", str(killed)]) == 0  # resume
    whole = tmp_path / "whole"
    assert main([*args, "--out", str(whole)]) == 0  # the same command, never interrupted
    resumed = json.loads((killed / "paths.json").read_text())
    for r in resumed["records"]:
        if r["key"] in kept:
            assert r == kept[r["key"]]  # measured before the kill: kept, not measured again
    assert len(resumed["records"]) == 16 and not journal.exists()

    def without_seconds(path):
        doc = json.loads(path.read_text())
        for r in doc["records"]:
            r.pop("seconds", None)
        return doc
    assert without_seconds(killed / "paths.json") == without_seconds(whole / "paths.json")
    assert not [p for p in killed.iterdir() if ".tmp" in p.name or p.name.endswith(".lock")]


# ---------------------------------------------------------------------------------------------
# 5. stochastic depth and fixed-m nets beside the normal one

def test_compare_nets_against_direct_evaluation(tmp_path):
    from respaths.io.checkpoint import load_checkpoint, save_checkpoint
    from respaths.experiments.compare import compare_nets, load_test_split
    from respaths.core import run_plan
    from respaths.data import batches
    ckpts = {}
    for label, options in (("normal", {}), ("stochastic depth", {"stochastic_depth": 0.5}), ("fixed m=3", {"fixed_m": 3})):
        torch.manual_seed(len(ckpts))
        m = respaths.build_model("resnet14", in_channels=3, num_classes=10, width=0.25, **options)
        save_checkpoint(tmp_path / label.replace(" ", "_"), m, {"dataset": {"name": "synthetic"}})
        ckpts[label] = tmp_path / label.replace(" ", "_")
    doc = compare_nets(ckpts, out=tmp_path / "cmp", limit=48, k="1-2", samples=2, batch_size=64)
    assert doc["reference"] == "normal" and set(doc["versus"]) == {"stochastic depth", "fixed m=3"}
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["nets"].keys() == doc["nets"].keys()
    assert doc["nets"]["fixed m=3"]["training"] == {"stochastic_depth": None, "fixed_m": 3}
    for label, path in ckpts.items():  # every number against the model run directly
        model, meta = load_checkpoint(path)
        x, y = next(batches(load_test_split(meta, None, None, 48), 48))
        view = respaths.view(model, x[:1])
        net = doc["nets"][label]
        with torch.no_grad():
            assert net["test"]["errors"] == int((model(x).argmax(1) != y).sum())
            for i in (0, 2, 5):
                wrong = int((run_plan(view, x, delete_blocks(6, [i])).argmax(1) != y).sum())
                assert net["single"]["errors"][i] == pytest.approx(wrong / 48)
        assert net["random"]["k"] == [1, 2] and net["random"]["n_samples"] == 2
        lo, hi = net["test"]["error_ci"]
        assert lo <= net["test"]["error"] <= hi
    ref, sd = doc["nets"]["normal"], doc["nets"]["stochastic depth"]
    v = doc["versus"]["stochastic depth"]
    assert v["error_delta"] == pytest.approx(sd["test"]["error"] - ref["test"]["error"])
    inc = lambda n: np.mean(n["single"]["errors"]) - n["single"]["baseline"]
    assert v["resilience"]["mean_increase_delta"] == pytest.approx(inc(sd) - inc(ref))
    assert v["random_delta"]["mean_error_delta"][0] == pytest.approx(sd["random"]["mean"][0] - ref["random"]["mean"][0])
