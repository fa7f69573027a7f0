"""The layers of distill/, read top to bottom: a module imports only its own package, the
packages of lower layers, and the packages named before it in its own layer. No import cycles
between modules, no imports of another module's private names. Lazy imports inside functions
count: they are imports all the same.

The README's "Architecture" section draws this table; change both together.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "distill"

# Lowest layer first. Within a layer, a unit may import the units listed before it in that
# layer; the stages (one layer) import none of each other.
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["distill.errors", "distill.logs", "distill.jsonl", "distill.experts",
                    "distill.minhash", "distill.locks"]),
    ("toy world", ["distill.toy"]),
    ("contract", ["distill.config", "distill.record_types", "distill.records", "distill.models",
                  "distill.positions", "distill.chat"]),
    ("services", ["distill.serving", "distill.grading", "distill.teacher", "distill.tracking",
                  "distill.links"]),
    ("planning", ["distill.plan"]),
    ("stages", ["distill.prompts", "distill.generate", "distill.shard", "distill.spend",
                "distill.filters", "distill.train", "distill.quantize", "distill.eval"]),
    ("report", ["distill.publish", "distill.view"]),
    ("doors", ["distill.recipes", "distill.pipeline", "distill.refresh", "distill.rehearse", "distill.sweep",
               "distill.cli"]),
]
# Units of the stages layer that belong together (a stage split over several modules).
SAME_STAGE = {"distill.shard": "distill.generate", "distill.spend": "distill.generate"}
ORDERED_LAYERS = {"foundation", "toy world", "contract", "services", "doors"}


def _unit(module: str) -> str | None:
    for _, units in LAYERS:
        for u in units:
            if module == u or module.startswith(u + "."):
                return u
    return None


def _position(unit: str) -> tuple[int, int, str]:
    for i, (name, units) in enumerate(LAYERS):
        if unit in units:
            return i, units.index(unit), name
    raise KeyError(unit)


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(name: str, path: Path) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every distill import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "distill" or mod.startswith("distill."):
                out += [(mod, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("distill")]
    return out


def test_every_module_has_a_layer():
    missing = sorted(m for m in _modules() if m != "distill" and _unit(m) is None)
    assert not missing, f"modules without a layer (add them to LAYERS and the README): {missing}"


def test_no_module_imports_upward_or_across_stages():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        unit = _unit(name)
        if unit is None:
            continue
        layer, order, layer_name = _position(unit)
        for mod, imported, line in _imports(name, path):
            target = f"{mod}.{imported}" if f"{mod}.{imported}" in modules else mod
            tunit = _unit(target)
            if tunit is None or tunit == unit or SAME_STAGE.get(tunit, tunit) == SAME_STAGE.get(unit, unit):
                continue
            tlayer, torder, tname = _position(tunit)
            ok = tlayer < layer or (tlayer == layer and layer_name in ORDERED_LAYERS and torder < order)
            if not ok:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {unit} ({layer_name}) imports {target} ({tname})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_private_names_of_other_modules():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        for mod, imported, line in _imports(name, path):
            if imported.startswith("_") and not imported.startswith("__") and mod != name:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {mod}.{imported}")
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


def test_no_import_cycles():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for mod, imported, _ in _imports(name, path):
            t = f"{mod}.{imported}" if f"{mod}.{imported}" in modules else mod
            if t in modules and t != name and not name.startswith(t + "."):
                targets.add(t)  # a module importing its own package's __init__ is not a cycle
        graph[name] = targets
    # Tarjan's strongly connected components, iteratively.
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        work = [(v, iter(graph[v]))]
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(graph[w])))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop(); on.discard(w); comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        cycles.append(sorted(comp))
    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a toy module importing a stage is caught."""
    fake = tmp_path / "distill"
    (fake / "toy").mkdir(parents=True)
    (fake / "toy" / "__init__.py").write_text("")
    (fake / "toy" / "bad.py").write_text("from distill.train.stage import run_train\n")
    (fake / "train").mkdir()
    (fake / "train" / "__init__.py").write_text("")
    (fake / "train" / "stage.py").write_text("from distill.toy import bad\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake)
    for check in (test_no_module_imports_upward_or_across_stages, test_no_import_cycles):
        try:
            check()
        except AssertionError as e:
            assert "distill.toy" in str(e) or "distill/toy/bad.py" in str(e)
        else:
            raise AssertionError(f"{check.__name__} missed an upward import")
