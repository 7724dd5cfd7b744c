"""The layout holds: import-linter's layer contracts (and a wrong import breaks them), no import
cycle, small modules, thin command doors, no private helper imported across modules, and
imports inside functions only where a heavy optional dependency is deferred."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "isnn_jax"
DOORS = ("api", "attack", "evaluate", "export", "leak", "licence", "predict", "protect",
         "registry", "serve", "trace", "train", "verify")
# Imports deliberately inside a function: heavy or optional dependencies, loaded on first use.
DEFERRED = {("isnn_jax/data/digits.py", "sklearn.datasets"),
            ("isnn_jax/data/digits.py", "sklearn.model_selection"),
            ("isnn_jax/attacks/report.py", "isnn_jax.attacks.figures")}  # matplotlib (optional)


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the package under `root` with the contracts of its pyproject.toml."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          timeout=120)


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_layer_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    """The protection core importing the seller's tracing must fail the contracts."""
    shutil.copytree(PACKAGE, tmp_path / "isnn_jax", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    transforms = tmp_path / "isnn_jax" / "protection" / "transforms.py"
    transforms.write_text(transforms.read_text() + "\nimport isnn_jax.seller.trace  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "BROKEN" in result.stdout and "isnn_jax.protection.transforms -> " \
        "isnn_jax.seller.trace" in result.stdout.replace("\n", " ")


def test_no_import_cycle_between_modules():
    graph = grimp.build_graph("isnn_jax")
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in edges[module]:
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target] if target in path else [target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_modules_are_small_and_doors_thin():
    long = {str(p.relative_to(ROOT)): n for p in modules()
            if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"modules over 300 lines: {long}"
    fat = {door: n for door in DOORS
           if (n := len((PACKAGE / f"{door}.py").read_text().splitlines())) >= 60}
    assert not fat, f"command doors of 60 lines or more: {fat}"
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == set(DOORS), f"top-level modules that are not doors: {top - set(DOORS)}"


def test_no_private_names_across_modules_and_no_hidden_imports():
    private, hidden = [], []
    for path in modules():
        where = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("isnn_jax"):
                private += [f"{where}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_")]
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom):
                        names = [node.module or ""]
                    else:
                        continue
                    hidden += [f"{where}: {n}" for n in names if (where, n) not in DEFERRED]
    assert not private, f"private names imported across modules: {private}"
    assert not hidden, f"imports inside functions (defer only heavy optional ones): {hidden}"
