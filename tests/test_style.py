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


def test_every_module_is_in_the_readmes_code_map():
    """The map's first column names files: the first with its folder under src/critic/, the others beside it."""
    import re

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Code map") :].split("\n\n")[2]
    mapped = set()
    for row in table.splitlines()[2:]:
        names = re.findall(r"`([\w/]+\.py)`", row.split("|")[1])
        folder = str(Path(names[0]).parent)
        mapped.update(names[:1] + [str(Path(folder) / name) for name in names[1:]])
    modules = {
        str(path.relative_to(ROOT / "src" / "critic"))
        for path in (ROOT / "src" / "critic").rglob("*.py")
        if path.name != "__init__.py"
    }
    assert sorted(modules - mapped) == []
    assert sorted(mapped - modules) == []  # and names no module that is gone


def test_help_imports_no_torch():
    """`critic --help` and every verb's help answer without importing torch (2.5 s before a word of help)."""
    script = (
        "import sys, contextlib, io\n"
        "from critic.cli import main, build_parser\n"
        "verbs = [None, *build_parser()._subparsers._group_actions[0].choices]\n"
        "for verb in verbs:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(['--help'] if verb is None else [verb, '--help'])\n"
        "print(len(verbs), 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    count, imported = result.stdout.split()
    assert int(count) > 10 and imported == "False"


def critic_imports() -> dict[str, set[str]]:
    """Each module of src/critic (a package by its own name) -> the critic modules it imports, those inside
    functions included."""
    import ast

    src = ROOT / "src"
    modules = {}
    for path in (src / "critic").rglob("*.py"):
        name = ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path

    def module_of(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {module_of(t) for t in targets if t.startswith("critic")}
        edges[name] = found - {name, None}
    return edges


def test_no_module_imports_another_in_a_circle_nor_two_stages_each_other():
    """Imports inside functions count: they hid the circles through training/ (train, distill, few_labels,
    pair_tuning) and between evaluate and inference, and data and text."""
    import graphlib

    edges = critic_imports()
    assert len(edges) > 40
    graphlib.TopologicalSorter(edges).static_order()  # raises CycleError, naming the circle
    stage = lambda module: module.split(".")[1] if "." in module else module  # noqa: E731
    crossing = {(stage(a), stage(b)) for a, targets in edges.items() for b in targets if stage(a) != stage(b)}
    assert sorted((a, b) for a, b in crossing if (b, a) in crossing) == []


def test_no_module_grows_past_600_lines():
    lengths = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in (ROOT / "src" / "critic").rglob("*.py")
    }
    assert {name: lines for name, lines in lengths.items() if lines > 600} == {}
