"""The house's structure, checked: no import cycle between modules (imports at the top of a
module, inside functions and for annotations alike), and no code outside the gate kinds that
asks which kind of gate it holds. The layer order itself is the import-linter contract in
pyproject.toml (``lint-imports``, run by scripts/test.sh)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "audiogate"

KIND_MODULES = ("gates/network/", "gates/voice/", "gates/registry.py", "gates/__init__.py")
"""Where a gate kind may be named: the kinds' own modules and the registry."""
KIND_NAMED_ELSEWHERE = {
    "config.py": "the recipes and the help text name the voice gate's model",
    "models/checkpoint.py": "the network kind's checkpoint body, written by the training loop",
    "core/checkpoint.py": "files of audiogate 0.1 and 0.2 have no kind field: their format "
                          "says which kind they are",
}
KIND_PATTERN = re.compile(r"\b(VoiceClassifier|OnnxVoiceClassifier|OnnxClassifier|VoiceKind|"
                          r"NetworkKind|VOICE_MODELS|is_voice\w*)\b|[\"'](ge2e|network|voice)"
                          r"[\"']")


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package) for every module of audiogate."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def imported(name: str, path: Path, is_package: bool, known: set[str]) -> Iterator[str]:
    """Every audiogate module ``name`` imports, wherever the import statement stands."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    yield sub
                elif target in known:
                    yield target


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imported(name, path, is_package, set(known))) - {name}
            for name, (path, is_package) in known.items()}


def test_no_module_imports_itself_back() -> None:
    graph = import_graph()
    assert graph["audiogate.gates.base"] >= {"audiogate.core.gate", "audiogate.data.decode"}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function() -> None:
    """What the test above would say if ``config`` imported ``gates`` inside a function."""
    graph = import_graph()
    graph["audiogate.config"].add("audiogate.gates.registry")
    assert any("audiogate.config" in c and "audiogate.gates.registry" in c
               for c in cycles(graph))


def test_only_the_kinds_and_the_registry_name_a_kind() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(KIND_MODULES) or rel in KIND_NAMED_ELSEWHERE:
            continue
        offenders += [f"{rel}:{i}: {line.strip()}"
                      for i, line in enumerate(path.read_text().splitlines(), 1)
                      if KIND_PATTERN.search(line)]
    assert offenders == []
