"""The code is formatted and lint-clean as pyproject.toml configures ruff (`ruff format`, `ruff check`)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_code_is_formatted_and_lint_clean():
    for command in (["format", "--check"], ["check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "src", "tests", "bench"], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, f"ruff {' '.join(command)}:\n{result.stdout}{result.stderr}"


def functions_and_private_imports():
    """(name, lines) of every function in src/, and every private name one critic module imports from another."""
    import ast

    functions, private = [], []
    for path in sorted((ROOT / "src" / "critic").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append(
                    (f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1)
                )
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("critic"):
                private += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names if a.name.startswith("_")]
    return functions, private


def test_functions_fit_a_screen_and_no_module_imports_anothers_private_names():
    functions, private = functions_and_private_imports()
    assert len(functions) > 300  # the walk saw the code
    assert [f"{name} ({lines} lines)" for name, lines in functions if lines > 80] == []
    assert private == []
