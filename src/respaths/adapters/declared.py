"""Any other model, through a declaration of a few lines.

    view = respaths.declare(model,
        stem="embed",                        # a module name, a callable, or a list of them run in order
        blocks="layers.*",                   # a glob over module names ('*' is one name segment),
                                             # or a list of names, modules and (branch, shortcut, post) triples
        head=["norm", lambda h: h.mean(1), "fc"],
        post="act")                          # how to find each block's three parts (below)

A block given by name (or as a module) computes post(shortcut(x) + branch(x)) with its parts found
by the keywords branch=, shortcut=, post=:
  branch   the name of the block's branch submodule (default "branch"), or a list of submodule
           names run in order, e.g. ["conv1", "bn1", "relu", "conv2", "bn2"];
  shortcut the name of the shortcut submodule (default "shortcut"; a missing or None one is the
           identity, torchvision's `downsample=None` convention), or a callable shared by all blocks;
  post     the name of the submodule applied after the addition (default "post"; missing: the
           identity), or a callable shared by all blocks such as torch.relu, or None.
A triple (branch, shortcut, post) gives the three parts directly, as module names or callables;
its shortcut None makes a plain layer with no skip, its post None is the identity.

The declaration is kept on the model, so later respaths.view(model) calls find it. A model class
can instead define `respaths_view(self)` returning a ResidualView or a dict of declare's keywords.
"""
from __future__ import annotations

import copy
import fnmatch
from typing import Any, Callable, Sequence

from torch import Tensor, nn

from ..core import Block, ResidualView, UserError, identity
from .agreement import check_view

ATTR = "_respaths_declaration"
README = "(docs/study-your-own-model.md, 'Bring your own model')"


class Default(str):
    """A default attribute name: when a block lacks it, the part is the identity instead of an error."""


def out_of_place(fn: Callable) -> Callable:
    """The same module, never in place: deleting a block computes post(x) on an activation the
    caller still holds, which an in-place ReLU would overwrite."""
    if isinstance(fn, nn.Module) and getattr(fn, "inplace", False):
        fn = copy.copy(fn)  # shares parameters; only the flag differs
        fn.inplace = False
    return fn


def is_identity(m: Any) -> bool:
    return m is None or m is identity or isinstance(m, nn.Identity) or (isinstance(m, nn.Sequential) and len(m) == 0)


def module(root: nn.Module, name: str, what: str) -> nn.Module:
    try:
        return root.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in root.named_children()) or "none"
        raise UserError(f"the {what} names {name!r}, but {type(root).__name__} has no such module "
                        f"(its children are: {children}).") from None


def glob(root: nn.Module, pattern: str) -> list[tuple[str, nn.Module]]:
    """Modules whose dotted name matches pattern segment by segment ('layers.*' -> layers.0, layers.1)."""
    want = pattern.split(".")
    found = [(n, m) for n, m in root.named_modules() if n and len(n.split(".")) == len(want)
             and all(fnmatch.fnmatchcase(a, b) for a, b in zip(n.split("."), want))]
    if not found:
        raise UserError(f"the block pattern {pattern!r} matches no module of {type(root).__name__}; "
                        f"give module names such as 'layers.*' or 'layer*.*' {README}.")
    return found


def chain(fns: Sequence[Callable]) -> Callable[[Tensor], Tensor]:
    if len(fns) == 1:
        return fns[0]

    def run(x):
        for f in fns:
            x = f(x)
        return x
    return run


def part(root: nn.Module, spec: Any, what: str) -> Callable:
    """A stem, head or triple part: None (identity), a module name, a callable, or a list of these."""
    if spec is None:
        return identity
    if isinstance(spec, str):
        return module(root, spec, what)
    if isinstance(spec, (list, tuple)):
        return chain([part(root, s, what) for s in spec])
    if callable(spec):
        return spec
    raise UserError(f"the {what} must be a module name, a callable or a list of them, not {type(spec).__name__}.")


def block_parts(block: nn.Module, name: str, branch: Any, shortcut: Any, post: Any):
    """(branch, shortcut, post) of a block module, found by the declaration's keywords."""
    def attr(spec: Any, what: str) -> Any:
        if not isinstance(spec, str):
            return spec  # a shared callable, or None
        if not hasattr(block, spec):
            if isinstance(spec, Default):
                return None
            raise UserError(f"block {name} ({type(block).__name__}) has no attribute {spec!r} for its {what}; "
                            f"name the right one with {what}=... in respaths.declare {README}.")
        return getattr(block, spec)

    if isinstance(branch, (list, tuple)):
        br = chain([module(block, n, f"branch of block {name}") if isinstance(n, str) else n for n in branch])
    else:
        br = attr(branch, "branch")
        if br is None:
            raise UserError(f"block {name} ({type(block).__name__}) has no 'branch' submodule; say which "
                            f"submodules form it with branch=[...] in respaths.declare {README}.")
    sc, po = attr(shortcut, "shortcut"), attr(post, "post")
    return br, (identity if is_identity(sc) else sc), (identity if is_identity(po) else out_of_place(po))


def build(model: nn.Module, stem: Any, blocks: Any, head: Any, branch: Any = Default("branch"),
          shortcut: Any = Default("shortcut"), post: Any = Default("post"), name: str = "") -> ResidualView:
    names = {m: n for n, m in model.named_modules()}
    items: list[Any] = []
    for entry in ([blocks] if isinstance(blocks, str) else list(blocks)):
        if isinstance(entry, str) and any(c in entry for c in "*?["):
            items += glob(model, entry)
        elif isinstance(entry, str):
            items.append((entry, module(model, entry, "block list")))
        elif isinstance(entry, nn.Module):
            items.append((names.get(entry, ""), entry))
        elif isinstance(entry, (list, tuple)) and len(entry) == 3:
            items.append(tuple(entry))
        else:
            raise UserError(f"a block must be a module name, a module or a (branch, shortcut, post) triple, "
                            f"not {entry!r} {README}.")
    if not items:
        raise UserError(f"the declaration of {type(model).__name__} lists no blocks {README}.")
    out: list[Block] = []
    parents: dict[str, int] = {}
    for i, item in enumerate(items):
        if len(item) == 2:  # (name, block module)
            bname, mod = item
            br, sc, po = block_parts(mod, bname or f"{i}", branch, shortcut, post)
        else:  # a triple; its shortcut None is a plain layer
            mod = None
            br_spec, sc_spec, po_spec = item
            bname = br_spec if isinstance(br_spec, str) else f"block{i}"
            br = part(model, br_spec, f"branch of block {i}")
            sc = None if sc_spec is None else (identity if is_identity(sc_spec) else part(model, sc_spec, f"shortcut of block {i}"))
            po = identity if po_spec is None else out_of_place(part(model, po_spec, f"post of block {i}"))
        # blocks that share a parent module (layer2.0, layer2.1) form a stage; triples are stage 0
        stage = parents.setdefault(bname.rpartition(".")[0], len(parents)) if mod is not None else 0
        out.append(Block(branch=br, shortcut=sc, post=po, name=bname, stage=stage,
                         downsample=sc is not None and sc is not identity, module=mod))
    return ResidualView(part(model, stem, "stem"), out, part(model, head, "head"), model=model,
                        name=name or type(model).__name__, adapter="declared")


def declare(model: nn.Module, *, stem: Any, blocks: Any, head: Any, branch: Any = Default("branch"),
            shortcut: Any = Default("shortcut"), post: Any = Default("post"), name: str = "",
            example_input: Any = None) -> ResidualView:
    """Declare how `model` is stem -> blocks -> head (see the module docstring); returns its view and
    keeps the declaration on the model for later respaths.view(model) calls. With example_input the
    view's output is compared with model(example_input), and a mismatch is a UserError naming the
    first block that differs (respaths.adapters.agreement)."""
    decl = dict(stem=stem, blocks=blocks, head=head, branch=branch, shortcut=shortcut, post=post, name=name)
    view = build(model, **decl)
    if example_input is not None:  # checked before it is kept: a wrong declaration leaves the model as it was
        view.probe(example_input)
        check_view(view, example_input)
    model.__dict__[ATTR] = decl  # a plain attribute, not a submodule or buffer: the state dict is unchanged
    return view


def adapt(model: nn.Module, **_) -> ResidualView | None:
    fn = getattr(model, "respaths_view", None)
    if callable(fn):
        got = fn()
        if isinstance(got, dict):
            return build(model, **got)
        if not isinstance(got, ResidualView):
            raise UserError(f"{type(model).__name__}.respaths_view() returned a {type(got).__name__}; it "
                            f"must return a ResidualView or a dict of respaths.declare's keywords.")
        return got
    decl = model.__dict__.get(ATTR)
    return build(model, **decl) if decl is not None else None
