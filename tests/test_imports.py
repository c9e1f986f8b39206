"""The import graph of respaths, top-level and function-local `from .x import` alike, has no cycle."""
import ast
from pathlib import Path

import respaths

ROOT = Path(respaths.__file__).parent


def import_graph() -> dict[str, set[str]]:
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in ROOT.rglob("*.py")}
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m.split(".")[:-1] if p.name != "__init__.py" else m.split(".")
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom) and n.level > 0:
                base = pkg[:len(pkg) - (n.level - 1)]
                # `from .pkg import mod` imports pkg and pkg.mod; `from .mod import name` imports mod
                names = [a.name for a in n.names] if not n.module else \
                    [n.module] + [f"{n.module}.{a.name}" for a in n.names]
                graph[m] |= {t for t in (".".join(base + [x]) for x in names) if t in mods and t != m}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (naively: a reaches b and b reaches a)."""
    def reach(a):
        seen, todo = set(), [a]
        while todo:
            for w in graph[todo.pop()] - seen:
                seen.add(w)
                todo.append(w)
        return seen
    r = {m: reach(m) for m in graph}
    return list({frozenset({m} | {w for w in r[m] if m in r[w]}) for m in graph if m in r[m]})


def test_no_import_cycles():
    graph = import_graph()
    assert "training.train" in graph["cli"]  # the graph does see function-local imports (cli's are all such)
    assert "training.ddp" in graph["training.train"] and "training.trainer" in graph["training.ddp"]
    assert cycles(graph) == [], cycles(graph)


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def function_local_imports() -> set[tuple[str, str]]:
    """(module, imported module) for every `from .x import` inside a function, outside the CLI."""
    found = set()
    for p in ROOT.rglob("*.py"):
        m = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        if m == "cli":  # the thin CLI imports each command's module only when that command runs
            continue
        for fn in ast.walk(ast.parse(p.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found |= {(m, "." * n.level + (n.module or "")) for n in ast.walk(fn)
                          if isinstance(n, ast.ImportFrom) and n.level > 0}
    return found


def test_own_modules_are_imported_at_the_top_but_in_the_cli():
    # optional packages (torchvision, timm, transformers) may be imported inside functions; own modules not
    assert function_local_imports() == set(), function_local_imports()


def test_layers_and_study_depend_one_way():
    # the report draws layer sweeps (study -> layers); layers draw with respaths.drawing, never through study
    graph = import_graph()
    assert "layers.figures" in graph["study.report"]
    assert not {(m, t) for m, ts in graph.items() if m.startswith("layers.") for t in ts if t.startswith("study")}


def test_io_is_a_bottom_layer():
    # io/ reads and writes files; it may use core, the model registry and the version, nothing above
    graph = import_graph()
    below = {"core", "models", "version"}
    for m, targets in graph.items():
        if m.startswith("io"):
            above = {t for t in targets if not t.startswith("io") and t not in below}
            assert above == set(), (m, above)
    assert "io.pruned" in graph and "io.atomic" in graph["io.pruned"]  # the pruned format writes through atomic_dir
