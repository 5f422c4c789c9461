"""The house rules of the layout, checked on the source: no import cycles, a contract package that is only a
contract, a bot that never pulls in the GPU stack, and subsystems reached only through their front modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

PACKAGES = ("core", "quotas", "moderation", "bot", "worker", "model", "bench", "discord_emulator", "web")
"""The project's own top-level packages (tests/ is left out: it may import anything)."""

SUBSYSTEMS = ("quotas", "moderation")
"""Packages whose `__init__` is their whole API: other packages import the package, never a module inside it."""


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _imported_names(path: Path, module: str, is_package: bool) -> set[str]:
    """Every dotted name the module imports, wherever the import statement is (functions, TYPE_CHECKING blocks)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project module -> project modules it imports, project module -> every dotted name it imports)."""
    modules = _modules()
    edges: dict[str, set[str]] = {}
    names: dict[str, set[str]] = {}
    for module, path in modules.items():
        imported = _imported_names(path, module, path.name == "__init__.py")
        names[module] = imported
        targets = set()
        for name in imported:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        edges[module] = targets
    return edges, names


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    """No two project modules import each other, directly or through others, counting imports in functions and
    under TYPE_CHECKING."""
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_cycle_finder_sees_a_cycle() -> None:
    """The check above can fail: a cycle through three modules is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


FORBIDDEN = {
    "core": ("discord", "torch", "diffusers", "transformers", "bot", "worker", "model", "quotas", "moderation"),
    "quotas": ("discord", "torch", "diffusers", "transformers", "bot", "worker", "model", "moderation"),
    "moderation": ("discord", "torch", "diffusers", "transformers", "bot", "worker", "model", "quotas"),
    "bot": ("torch", "diffusers", "transformers", "worker", "model", "tests", "web"),
    "web": ("discord", "torch", "diffusers", "transformers", "bot", "worker", "model", "tests"),
    "worker": ("bot", "tests", "web"),
    "bench": ("tests",),
    "discord_emulator": ("core", "quotas", "moderation", "bot", "worker", "model", "bench", "tests"),
}
"""Package -> top-level names its modules must not import."""


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_their_layer_allows(package: str) -> None:
    """The contract package is only a contract; the subsystems need no Discord or GPU; the bot never imports the
    GPU stack or the worker; no package imports the tests; the Discord emulator knows nothing of this project."""
    _, names = _graph()
    wrong = sorted(
        f"{module} imports {name}"
        for module, imported in names.items()
        if module == package or module.startswith(f"{package}.")
        for name in imported
        if name.split(".")[0] in FORBIDDEN[package]
    )
    assert wrong == []


def test_subsystems_are_reached_only_through_their_front_module() -> None:
    """Outside quotas/ and moderation/, code imports `quotas` and `moderation`, never a module behind them."""
    _, names = _graph()
    behind = {f"{package}.{path.stem}" for package in SUBSYSTEMS for path in (REPO / package).glob("*.py")} - {
        f"{package}.__init__" for package in SUBSYSTEMS
    }
    wrong = sorted(
        f"{module} imports {name}"
        for module, imported in names.items()
        if module.split(".")[0] not in SUBSYSTEMS
        for name in imported
        if any(name == hidden or name.startswith(f"{hidden}.") for hidden in behind)
    )
    assert wrong == []


LIGHT = "core.prompt,core.queue,core.jobs,core.settings,quotas,moderation"


@pytest.mark.parametrize("modules", [LIGHT, "bot.__main__", "web.__main__"])
def test_importing_the_light_side_loads_no_gpu_stack(modules: str) -> None:
    """Importing the contract, the subsystems or the whole bot (in a fresh interpreter) loads no torch or
    diffusers, and the contract loads no discord."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules.split(',')!r}: importlib.import_module(name)\n"
        "print(' '.join(sorted(m for m in ('torch', 'diffusers', 'transformers', 'discord') if m in sys.modules)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    expected = "discord" if modules == "bot.__main__" else ""  # the web app loads none of them
    assert loaded.stdout.strip() == expected
