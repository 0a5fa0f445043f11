"""The docstrings' examples are tests too: every module of adaptive_focal is found on disk and its doctests run.

Every *public* module (no component of its dotted name starts with ``_``) must also hold at least one runnable
example, except

* a deprecated shim: its docstring starts with ``Deprecated`` (it only forwards to the new module);
* a re-exporting package: an ``__init__.py`` whose top level defines no class and no function other than the
  module hooks ``__getattr__`` / ``__dir__`` (what it offers is defined, with its examples, in its submodules).

A module whose optional dependency is missing (the ImportError names the extra to install, see
``adaptive_focal.integrations._optional``) is skipped, not failed.
"""

import ast
import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import adaptive_focal

PACKAGE = Path(adaptive_focal.__file__).parent
MODULE_HOOKS = {"__getattr__", "__dir__"}


def discover(path: Path = PACKAGE, name: str = "adaptive_focal") -> list[str]:
    """The dotted names of the package at ``path`` and of every module and package below it, without importing
    any of them."""
    found = [name]
    for info in pkgutil.iter_modules([str(path)]):
        if info.name == "__main__":  # running it is all it does
            continue
        child = f"{name}.{info.name}"
        found += discover(path / info.name, child) if info.ispkg else [child]
    return found


MODULES = discover()


def is_public(name: str) -> bool:
    return not any(part.startswith("_") for part in name.split("."))


def is_deprecated_shim(module) -> bool:
    return (module.__doc__ or "").lstrip().startswith("Deprecated")


def is_reexporting_package(module) -> bool:
    if Path(module.__file__).name != "__init__.py":
        return False
    tree = ast.parse(Path(module.__file__).read_text())
    defined = [node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return set(defined) <= MODULE_HOOKS


def import_or_skip(name: str):
    """The module; a skip when it needs an optional dependency that is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        if "pip install 'adaptive_focal[" in str(err):
            pytest.skip(f"{name}: {err}")
        raise


def test_discovery_finds_every_module_file():
    files = {p.relative_to(PACKAGE.parent).with_suffix("") for p in PACKAGE.rglob("*.py")}
    expected = sorted(".".join(p.parts[:-1] if p.name == "__init__" else p.parts) for p in files
                      if p.name != "__main__")
    assert sorted(MODULES) == expected
    assert {"adaptive_focal.loss", "adaptive_focal.compare.runner", "adaptive_focal.policies.learned"} <= set(MODULES)


@pytest.mark.filterwarnings(r"ignore:adaptive_focal\.\w+ is deprecated:DeprecationWarning")  # the shims' import
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    module = import_or_skip(name)
    monkeypatch.chdir(tmp_path)  # an example that writes a relative path writes here
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name} (the output above says which)"
    if result.attempted == 0 and is_public(name):
        assert is_deprecated_shim(module) or is_reexporting_package(module), (
            f"{name} is public but has no runnable example: add one to its module docstring (or make it private, "
            "a deprecated shim or a package that only re-exports; see this file's docstring)")
