"""The test suite's own layout: shared helpers live in tests/helpers/; no test module imports another test module
or conftest (which holds fixtures only, found by pytest)."""

import ast
from pathlib import Path

TESTS = Path(__file__).parent

# TEMPORARY: the sigmoid-statistics branch's test modules still import the old names; this goes, with
# tests/_reference.py and the re-export in conftest.py, when they import helpers.reference instead
NOT_YET_MOVED = {
    "test_functional_sigmoid.py": {"_reference", "conftest"},
    "test_triton_interpret.py": {"_reference"},
    "test_stats.py": {"_reference"},
    "test_stats_grad.py": {"_reference"},
}


def imported_modules(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_test_module_imports_another_or_conftest():
    suite = {p.stem for p in TESTS.glob("*.py")}  # test modules, conftest and the temporary shim
    offenders = {}
    for path in sorted([*TESTS.glob("*.py"), *(TESTS / "helpers").glob("*.py")]):
        wrong = (imported_modules(path) & suite) - {path.stem} - NOT_YET_MOVED.get(path.name, set())
        if wrong:
            offenders[str(path.relative_to(TESTS))] = sorted(wrong)
    assert not offenders, f"import these from tests/helpers/ instead: {offenders}"


def test_the_exceptions_are_still_needed():
    """Once a listed module imports helpers.reference, its entry must go (and with the last, the shim)."""
    for name, allowed in NOT_YET_MOVED.items():
        assert allowed <= imported_modules(TESTS / name), f"{name} no longer imports {allowed}: drop its entry"
