"""The package's layers: the core imports no technique, there is no import cycle, the trainer names no technique."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "leannet"
TECHNIQUES = ("leannet.norm", "leannet.distill", "leannet.evolve", "leannet.spiking", "leannet.multitask",
              "leannet.explain")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the leannet modules it imports anywhere in its code (function-level imports included),
    plus the packages those live in (importing `a.b.c` runs `a.b`'s __init__ first)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
        edges = set()
        for target in (t for t in targets if t.startswith("leannet.")):
            parts = target.split(".")
            for k in range(2, len(parts) + 1):
                ancestor = ".".join(parts[:k])
                if ancestor in modules and not name.startswith(ancestor + ".") and ancestor != name:
                    edges.add(ancestor)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_no_import_cycle():
    graph = import_graph()
    assert "leannet.method" in graph and graph["leannet.train.run"]  # the walk sees the package
    assert find_cycle(graph) == []


def test_import_cycle_detector_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_core_and_trainer_import_no_technique():
    graph = import_graph()
    core = ("leannet.method", "leannet.registry", "leannet.stages", "leannet.runio", "leannet.config",
            "leannet.plugins")
    for module in graph:
        if module.startswith(("leannet.train", "leannet.models", "leannet.data", "leannet.report")) or module in core:
            assert not {t for t in graph[module] if t.startswith(TECHNIQUES)}, module
    code = "import sys, leannet.train, leannet.cli; print(sorted(m for m in sys.modules if m.startswith('leannet.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert "leannet.train.run" in loaded and not any(f"'{t}" in loaded for t in TECHNIQUES)


def code_words(path: Path) -> set[str]:
    """Identifiers, imported names and string constants of a module's code (docstrings and comments left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.alias):
            words.add(node.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            words.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value)
    return {w.lower() for w in words}


def test_trainer_code_names_no_technique():
    techniques = ("rbn", "freeze", "bn_only", "evolv", "generation", "distill", "teacher", "byot", "spiking",
                  "snn", "adashare", "dissect", "lsr", "smoothing", "norm.", "explain")
    assert "RunCheckpoint".lower() in code_words(PACKAGE / "train" / "run.py")
    for path in (PACKAGE / "train").glob("*.py"):
        named = {w for w in code_words(path) for t in techniques if t in w}
        assert not named, f"{path.name} names {named}"
