"""Prune two blocks of timm's ViT-Tiny (random weights), save it from Python, and rebuild it with timm
and safetensors alone from what respaths_prune.json records (docs/study-your-own-model.md, "Prune and
export"). Run: python examples/prune_vit_rebuild.py"""
import json, sys, tempfile
import timm, torch
from safetensors.torch import load_file
import respaths

torch.manual_seed(0)
model = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
x = torch.randn(1, 3, 224, 224)
pruned = respaths.prune(model, [3, 7], x)
count = lambda m: sum(p.numel() for p in m.parameters())
print(f"{type(pruned).__name__}: len(blocks) {len(model.blocks)} -> {len(pruned.blocks)}, "
      f"parameters {count(model) / 1e6:.2f}M -> {count(pruned) / 1e6:.2f}M")
out = respaths.save_pruned(pruned, tempfile.mkdtemp() + "/vit-small", example_input=x)
rebuild = json.loads((out / "respaths_prune.json").read_text())["rebuild"]
print(rebuild["python"])
again = timm.create_model(*rebuild["args"], pretrained=False, **rebuild["kwargs"]).eval()
again.load_state_dict(load_file(out / "model.safetensors"))
with torch.no_grad():
    print("equal to the view's deletion plan:", torch.equal(again(x), respaths.view(model, x)(x, respaths.delete_blocks(12, [3, 7]))))
