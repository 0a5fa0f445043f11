"""The test suite's own layout: shared helpers live in tests/helpers/; no test module imports another test module
or conftest (which holds fixtures only, found by pytest)."""

import ast
from pathlib import Path

TESTS = Path(__file__).parent

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
    suite = {p.stem for p in TESTS.glob("*.py")}  # test modules and conftest
    offenders = {}
    for path in sorted([*TESTS.glob("*.py"), *(TESTS / "helpers").glob("*.py")]):
        wrong = (imported_modules(path) & suite) - {path.stem}
        if wrong:
            offenders[str(path.relative_to(TESTS))] = sorted(wrong)
    assert not offenders, f"import these from tests/helpers/ instead: {offenders}"

