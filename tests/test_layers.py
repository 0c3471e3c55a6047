"""Dependencies run one way: no module of bench imports one that imports it back, directly or through others, imports
inside functions (lazy imports) included.

Two checks keep it so. `lint-imports` checks the contracts in pyproject.toml's [tool.importlinter]: the layers of bench
(a module imports only from the layers below its own) and no cycle among the modules of bench or of a package in it.
Import Linter cannot see one kind of cycle: a package's own __init__ importing its modules while they import names from
it (bench.data and its loaders), so a test here looks for cycles in grimp's graph of every import, that one included.
Grimp (Import Linter's engine) reads every import statement, in a function, a method or under `if TYPE_CHECKING:` as at
the top of a module; it cannot see importlib.import_module (which bench uses only for users' custom losses).

Tests here run lint-imports on bench, and on toy copies of its layers that each break the contracts one way, so that
the contracts are known to catch what they are meant to; and look for cycles in grimp's graph of bench.
`python tests/test_layers.py` prints the import cycles of bench as it is, each import with its line.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import grimp
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: Import Linter depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 120

# --- the cycles of an import graph ---

Graph = dict[str, set[str]]


def import_graph(package: str = "bench") -> tuple[grimp.ImportGraph, Graph]:
    """Grimp's graph of `package` (every import, lazy ones included) and the same as importer -> imported modules."""
    graph = grimp.build_graph(package, cache_dir=None)
    return graph, {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


def _strongly_connected(graph: Graph) -> list[list[str]]:
    """The strongly connected components of `graph` that hold a cycle (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        components.append(sorted(component))
    return components


def _shortest_path(graph: Graph, start: str, end: str, within: set[str]) -> list[str]:
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue and end not in previous:
        node = queue.popleft()
        for successor in sorted(graph[node] & within):
            if successor not in previous:
                previous[successor] = node
                queue.append(successor)
    path = [end]
    while path[-1] != start:
        path.append(previous[path[-1]])  # type: ignore[arg-type]
    return path[::-1]


def import_cycles(graph: Graph) -> list[list[str]]:
    """Cycles of `graph`, each as [a, b, ..., a]: for every import that is part of some cycle, the shortest cycle through
    it (so that every such import is shown), each cycle once, the shortest first."""
    cycles, seen = [], set()
    for component in _strongly_connected(graph):
        members = set(component)
        for importer in component:
            for imported in sorted(graph[importer] & members):
                loop = [importer, *_shortest_path(graph, imported, importer, members)][:-1]
                first = loop.index(min(loop))
                loop = loop[first:] + loop[:first]
                if tuple(loop) not in seen:
                    seen.add(tuple(loop))
                    cycles.append([*loop, loop[0]])
    return sorted(cycles, key=len)  # the shortest first


def _source(module: str) -> str:
    path = Path(*module.split("."))
    return str(path / "__init__.py") if (REPO / path).is_dir() else f"{path}.py"


def describe(grimp_graph: grimp.ImportGraph, cycle: list[str]) -> str:
    """One line: each import of the cycle with the file and line(s) that make it."""
    links = [cycle[0]]
    for importer, imported in zip(cycle, cycle[1:]):
        lines = sorted({detail["line_number"] for detail in grimp_graph.get_import_details(importer=importer,
                                                                                           imported=imported)})
        links.append(f"-({_source(importer)}:{','.join(map(str, lines))})-> {imported}")
    return " ".join(links)


# --- lint-imports ---


def _contract_names() -> dict[str, str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract["name"] for contract in config["contracts"]}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """`lint-imports` run in `cwd` (it reads cwd's pyproject.toml and finds the root package there first)."""
    executable = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert executable, "lint-imports not found: install the test extra (pip install -e '.[test]')"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(NO_COLOR="1", COLUMNS="250")  # plain text, one contract a line
    return subprocess.run([executable, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def _outcome(output: str, contract: str) -> str:
    """KEPT or BROKEN, as lint-imports' summary says for the contract of id `contract`."""
    found = re.search(re.escape(_contract_names()[contract]) + r"\s+(KEPT|BROKEN)", output)
    assert found, f"no outcome for contract {contract!r} in:\n{output}"
    return found.group(1)


def test_lint_imports_keeps_every_contract():
    result = lint_imports(REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"lint-imports failed (exit code {result.returncode}):\n{output}"
    for contract in _contract_names():
        assert _outcome(output, contract) == "KEPT", output


def _layer_modules(layer: str) -> list[str]:
    """The module names of one line of the layers contract: "a | (b)" -> ["a", "b"]."""
    return [name.strip().strip("()").strip() for name in re.split(r"[|:]", layer)]


def _toy_bench(root: Path) -> Path:
    """A package bench under `root`, with pyproject.toml beside it, that keeps the contracts: one empty module for each
    name in the layers contract, each importing the first module of the layer below its own. Made from the contracts
    themselves, so that what breaks them is tested whatever state bench itself is in (the test above checks bench)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = [_layer_modules(layer) for layer in next(c for c in config["contracts"] if c["id"] == "layers")["layers"]]
    package = root / "bench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for above, below in zip(layers, [*layers[1:], []]):
        for name in above:
            (package / f"{name}.py").write_text(f"from bench import {below[0]}\n" if below else "")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return package


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _lazy_import(path: Path, module: str) -> None:
    """Adds a function to `path` that imports bench's `module` when called."""
    _append(path, f"\n\ndef _lazy():\n    from bench import {module}\n\n    return {module}\n")


# Each breaks a toy bench: (what it does to the package, the contracts lint-imports must then find broken or kept,
# what its report must say).
BREAKAGES = {
    # A lazy import from the bottom layer to the top one: a loop too, since cli imports io through the layers between.
    "io-imports-cli-lazily": (
        lambda bench: _lazy_import(bench / "io.py", "cli"),
        {"layers": "BROKEN", "acyclic": "BROKEN"},
        ["bench.io is not allowed to import bench.cli", "bench.io -> bench.cli"],
    ),
    # The import this test was written after: data asked bench.prefetch (which imports data) for its hint's command.
    "data-asks-prefetch-for-a-hint": (
        lambda bench: _lazy_import(bench / "data.py", "prefetch"),
        {"layers": "BROKEN", "acyclic": "BROKEN"},
        ["bench.data is not allowed to import bench.prefetch", "bench.data -> bench.prefetch"],
    ),
    # Two modules of one layer whose modules may import each other (losses and terms), each importing the other: the
    # layers hold, the one-way rule does not.
    "siblings-import-each-other": (
        lambda bench: (_lazy_import(bench / "losses.py", "terms"), _lazy_import(bench / "terms.py", "losses")),
        {"layers": "KEPT", "acyclic": "BROKEN"},
        ["No cycles are allowed in bench."],
    ),
    # Two trial kinds, which may not import each other.
    "a-kind-imports-another": (
        lambda bench: _lazy_import(bench / "translation.py", "gan"),
        {"layers": "BROKEN", "acyclic": "KEPT"},
        ["bench.translation is not allowed to import bench.gan"],
    ),
    # A new module of bench in no layer.
    "module-in-no-layer": (
        lambda bench: (bench / "placeless.py").write_text('"""In no layer of the contract."""\n'),
        {"layers": "BROKEN", "acyclic": "KEPT"},
        ["The following modules are not listed as layers", "- bench.placeless"],
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_lint_imports_fails_on_a_bench_that_breaks_a_contract(tmp_path, breakage):
    bench = _toy_bench(tmp_path)
    intact = lint_imports(tmp_path)
    # It is the toy that lint-imports reads (the one in the working directory), not the installed bench.
    assert f"Analyzed {len(list(bench.iterdir()))} files" in intact.stdout, intact.stdout
    assert intact.returncode == 0, f"the toy bench breaks the contracts before any change:\n{intact.stdout}{intact.stderr}"
    edit, outcomes, messages = BREAKAGES[breakage]
    edit(bench)
    result = lint_imports(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"lint-imports exit code {result.returncode}, expected 1:\n{output}"
    for contract, outcome in outcomes.items():
        assert _outcome(output, contract) == outcome, f"contract {contract!r}:\n{output}"
    for message in messages:
        assert message in output, f"{message!r} not in:\n{output}"


# --- grimp: no cycle at all ---


def test_grimp_counts_imports_inside_functions(tmp_path, monkeypatch):
    """What the checks rest on: an import in a function, in a method and under TYPE_CHECKING are edges of the graph."""
    package = tmp_path / "layerstoy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import layerstoy.b\n")
    (package / "b.py").write_text("def f():\n    from layerstoy import a\n    return a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from layerstoy import d\n")
    (package / "d.py").write_text("class K:\n    def m(self):\n        from . import c\n        return c\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    grimp_graph, graph = import_graph("layerstoy")
    assert graph["layerstoy.b"] == {"layerstoy.a"} and graph["layerstoy.d"] == {"layerstoy.c"}
    cycles = {" ".join(cycle) for cycle in import_cycles(graph)}
    assert cycles == {"layerstoy.a layerstoy.b layerstoy.a", "layerstoy.c layerstoy.d layerstoy.c"}


def test_bench_has_no_import_cycle():
    origin = importlib.util.find_spec("bench").origin
    assert Path(origin).parent == REPO / "bench", f"bench is imported from {origin}, not from this checkout"
    grimp_graph, graph = import_graph("bench")
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (lazy imports counted):\n" + "\n".join(describe(grimp_graph, c) for c in cycles)


if __name__ == "__main__":
    grimp_graph, graph = import_graph("bench")
    found = import_cycles(graph)
    for cycle in found:
        print(describe(grimp_graph, cycle))
    print(f"{len(found)} import cycle(s) in bench" if found else "no import cycle in bench")
    sys.exit(1 if found else 0)
