"""The directions of imports that docs/ARCHITECTURE.md promises, read from the source.

Every ``import`` of every module under src/hostseal is read with :mod:`ast` (imports under
``if TYPE_CHECKING:`` are left out: they never run). A failure names the importing file, its line
and the rule it breaks; docs/ARCHITECTURE.md says why each rule exists.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. hostseal.server.enrol
    target: str  # what it imports, resolved to a module where one exists
    line: int
    path: Path

    def where(self) -> str:
        return f"{self.path.relative_to(SRC.parent)}:{self.line} imports {self.target}"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "hostseal").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str:
    """``name`` if it is a module of the package, else the module that defines it."""
    if not name.startswith("hostseal"):
        return name
    probe = name
    while probe and probe not in MODULES:
        probe = probe.rpartition(".")[0]
    return probe or name


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking_only(child):
            for other in child.orelse:
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def _imports() -> list[Import]:
    found = []
    for module, path in MODULES.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in _walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:
                    whole = f"{base}.{alias.name}"
                    targets.append(whole if whole in MODULES else base)
            for target in targets:
                found.append(Import(module, _resolve(target), node.lineno, path))
    return found


IMPORTS = _imports()


def _package(module: str) -> str:
    """The top-level package or module of hostseal that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# -- the rules ------------------------------------------------------------------------------------

# what each package of hostseal may import of hostseal; anything not named is refused
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "tcg": {"errors"},
    "fsutil": {"errors"},
    "settings": {"errors"},
    "measure": {"errors", "tcg"},
    "attest": {"errors", "tcg", "measure"},
    "tpm": {"errors", "tcg"},
    "swtpmproc": {"errors"},
    "systemd": {"errors", "fsutil"},
    "pki": {"errors"},
    "truststore": {"errors", "attest"},
    "hostinfo": {"errors", "tcg", "settings", "measure", "tpm"},
    "client": {"errors", "fsutil", "settings"},
    "secureconfig": {"errors", "fsutil", "measure", "tpm", "systemd", "hostinfo"},
    "keyprovider": {"errors", "fsutil", "client"},
    "vtpm": {"errors", "fsutil", "pki", "keyprovider", "swtpmproc", "tcg"},
    "lab": {"errors", "fsutil", "measure", "tpm", "swtpmproc"},
    "agent": {
        "errors",
        "fsutil",
        "settings",
        "tcg",
        "measure",
        "tpm",
        "hostinfo",
        "secureconfig",
        "client",
    },
    "server": {
        "errors",
        "fsutil",
        "settings",
        "tcg",
        "pki",
        "truststore",
        "measure",
        "attest",
        "secureconfig",
        "client",
    },
    "doctor": {"errors", "tcg", "measure", "tpm", "hostinfo", "secureconfig", "agent", "client"},
    "demo": {"errors", "fsutil", "lab", "secureconfig", "agent", "client", "server"},
}
TOP = {"cli", ""}  # the command line and the package's own __init__ may import anything

# third-party packages that only one part of hostseal may import
ONLY_IN = {
    "tpm2_pytss": {"tpm"},
    "fastapi": {"server"},
    "starlette": {"server"},
    "uvicorn": {"server"},
    "sqlalchemy": {"server"},
    "alembic": {"server"},
    "jinja2": {"server"},
    "psycopg": {"server"},
}
# what a pure core never touches: files, processes, sockets, databases, the clock of the host
IMPURE = {"socket", "subprocess", "sqlite3", "shutil", "tempfile", "http", "urllib", "httpx"}
PURE = ("hostseal.measure", "hostseal.attest")

SERVER_LAYERS = ("hostseal.server.storage", "hostseal.server.http")
# the composition roots that put the service together: they may reach into the HTTP layer
SERVER_ENTRY_POINTS = {"hostseal.server", "hostseal.server.localadmin"}


def test_packages_import_only_what_is_below_them() -> None:
    broken = []
    for imp in IMPORTS:
        source, target = _package(imp.module), _package(imp.target)
        # the root package holds only the version: everyone may read it
        if not imp.target.startswith("hostseal.") or source in TOP or source == target:
            continue
        if source not in MAY_IMPORT:
            broken.append(f"{imp.where()}: package {source!r} has no place in the layers yet")
        elif target not in MAY_IMPORT[source]:
            broken.append(f"{imp.where()}: {source} may not import {target}")
    assert not broken, "\n".join(broken)


def test_third_party_frameworks_stay_in_their_layer() -> None:
    broken = [
        f"{imp.where()}: only {', '.join(sorted(ONLY_IN[top]))} may import {top}"
        for imp in IMPORTS
        if (top := imp.target.split(".")[0]) in ONLY_IN and _package(imp.module) not in ONLY_IN[top]
    ]
    assert not broken, "\n".join(broken)


def test_pure_cores_touch_no_files_processes_or_sockets() -> None:
    broken = [
        f"{imp.where()}: {imp.module} is a pure core"
        for imp in IMPORTS
        if _within(imp.module, *PURE) and imp.target.split(".")[0] in IMPURE
    ]
    assert not broken, "\n".join(broken)


def test_the_agent_and_the_clients_never_import_the_server() -> None:
    broken = [
        imp.where()
        for imp in IMPORTS
        if _within(imp.module, "hostseal.agent", "hostseal.client", "hostseal.keyprovider")
        and _within(imp.target, "hostseal.server")
    ]
    assert not broken, "\n".join(broken)


def test_server_layers_point_down() -> None:
    """storage <- domain <- http: storage imports neither the domain nor HTTP; the domain
    modules do not import HTTP (except the composition roots that serve the app)."""
    broken = []
    for imp in IMPORTS:
        if not _within(imp.module, "hostseal.server") or not _within(imp.target, "hostseal.server"):
            continue
        if _within(imp.module, "hostseal.server.storage"):
            if not _within(imp.target, "hostseal.server.storage"):
                broken.append(f"{imp.where()}: storage imports nothing above it")
        elif (
            not _within(imp.module, *SERVER_LAYERS)
            and imp.module not in SERVER_ENTRY_POINTS
            and _within(imp.target, "hostseal.server.http")
        ):
            broken.append(f"{imp.where()}: a domain module does not import the HTTP layer")
    assert not broken, "\n".join(broken)


def _cycles() -> list[list[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in IMPORTS:
        target = imp.target
        # a module importing its own package's __init__ runs after it: not a loop
        if target in MODULES and target != imp.module and not imp.module.startswith(target + "."):
            graph[imp.module].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_loops_not_even_behind_a_late_import() -> None:
    cycles = _cycles()
    assert not cycles, "import loops:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_every_package_in_the_table_exists(package: str) -> None:
    """A package renamed or removed must leave the table too (a stale rule checks nothing)."""
    assert f"hostseal.{package}" in MODULES
