"""The package's shape, checked: no import cycles between modules, and no private name (or private module)
of one package imported by another."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "streamsrc"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def runtime_imports(path: Path, package: str) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every import of a streamsrc module that runs (at import time or
    later, in a function), leaving out ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for child in node.body for n in ast.walk(child)}
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] == "streamsrc":
                found.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "streamsrc")
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target, names, _ in runtime_imports(path, package):
            for imported in names or [""]:
                # ``from pkg import sub`` names a submodule when one exists
                full = f"{target}.{imported}" if imported and f"{target}.{imported}" in mods else target
                if full in mods and full != name:
                    edges[name].add(full)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def is_package_init_edge(a: str, b: str) -> bool:
    """A package's ``__init__`` re-exporting its own submodules (and they importing siblings
    through it) is how a package is built, not a cycle between layers."""
    return b.startswith(a + ".") or a.startswith(b + ".")


def test_no_import_cycles_between_modules() -> None:
    edges = graph()
    # drop the edges between a package and its own submodules (re-exports)
    pruned = {a: {b for b in bs if not is_package_init_edge(a, b)} for a, bs in edges.items()}
    assert cycles(pruned) == []


def test_the_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def owner(module: str) -> str:
    """The package a module belongs to (``streamsrc.store._contract`` -> ``streamsrc.store``)."""
    mods = modules()
    path = mods.get(module)
    return module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]


def test_no_private_name_is_imported_across_packages() -> None:
    offences = []
    for name, path in modules().items():
        here = owner(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target, names, line in runtime_imports(path, package):
            there = owner(target) if target in modules() else target
            if here == there or here.startswith(there + "."):  # its own package, or a parent's
                continue
            private_module = any(part.startswith("_") for part in target.split(".")[1:])
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private_module or private_names:
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} {names}")
    assert offences == []


# The layers of docs/index.md's map, lowest first: a module may import its own layer and the ones
# below it, never one above (the stream core knows nothing of events or stores; the store contract
# nothing of entities, projections or the CLI). A new top-level module must be placed here.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "streamsrc.errors",
        "streamsrc.effect",
        "streamsrc.display",
        "streamsrc.telemetry",
        "streamsrc.sqlite_threads",
    ),
    ("streamsrc.stream",),
    ("streamsrc.events", "streamsrc.codec"),
    (
        "streamsrc.store",
        "streamsrc.transforms",
        "streamsrc.shredding",
        "streamsrc.tenancy",
        "streamsrc.retention",
        "streamsrc.migrate",
    ),
    ("streamsrc.entity", "streamsrc.projections", "streamsrc.integrations"),
    (
        "streamsrc.examples",
        "streamsrc.demo",
        "streamsrc.testing",
        "streamsrc.cli",
        "streamsrc.__main__",
        "streamsrc",
    ),
)


def layer(module: str) -> int | None:
    """The layer of ``module`` (its longest listed prefix), or ``None`` if it is in none."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for number, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), number)
    return None if best is None else best[1]


def test_every_module_has_a_layer() -> None:
    assert [m for m in modules() if layer(m) is None] == []


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import of a module in a layer above the importer's."""
    offences = []
    for name, targets in sorted(edges.items()):
        here = layer(name)
        for target in sorted(targets):
            there = layer(target)
            if here is not None and there is not None and there > here:
                offences.append(f"{name} (layer {here}) imports {target} (layer {there})")
    return offences


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward(graph()) == []


def test_the_layer_check_finds_an_upward_import() -> None:
    assert layer("streamsrc.stream._core") == 1
    assert layer("streamsrc.store.dynamodb._items") == 3
    assert layer("streamsrc") == 5
    assert upward({"streamsrc.stream._core": {"streamsrc.events", "streamsrc.effect"}}) == [
        "streamsrc.stream._core (layer 1) imports streamsrc.events (layer 2)"
    ]
    assert (
        upward({"streamsrc.cli": {"streamsrc.store.sqlite"}, "streamsrc.codec": {"streamsrc.events"}}) == []
    )
