"""The package's shape, kept honest: each module of job/ holds one concern and has a test file,
no module grows past a few screens, and the import graph has no cycles."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p for p in (ROOT / "job").glob("*.py") if not p.name.startswith("__"))
MAX_LINES = 350


def job_imports(path: Path) -> set[str]:
    """The job modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "job":
            if node.module == "job":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("job.")}
    return found - {path.stem}


def test_import_graph_has_no_cycles():
    graph = {p.stem: job_imports(p) for p in MODULES}
    done, cycles = set(), []

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph.get(module, ())):
            if dep in path:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(module)

    for module in graph:
        visit(module, [module])
    assert not cycles, cycles


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_fits_on_a_few_screens(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines; split it by concern"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_has_a_test_file(path):
    assert (ROOT / "tests" / f"test_{path.stem}.py").exists()


def test_the_cycle_check_can_see_a_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from job.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from job import a\n")
    assert job_imports(tmp_path / "a.py") == {"b"} and job_imports(tmp_path / "b.py") == {"a"}
