"""The package's shape, kept honest: one folder per stage, imports that only run downwards
(cli -> pipeline -> training | inference -> checkpoint -> model -> corpus -> shared), no import
cycles, no module past a few screens, and a test file for every module in the mirrored folder."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "job"
MAX_LINES = 400

# The layers, lowest first. A module may import modules of its own layer and of layers below it;
# training and inference share a floor and may not import each other.
LAYERS = [
    {"shared"},
    {"corpus"},
    {"model"},
    {"checkpoint"},
    {"training", "inference"},
    {"pipeline"},
    {"cli"},
]
# Top-level modules: the layer each belongs to (a folder's modules belong to the folder's layer).
TOP_LEVEL = {
    "__main__": "cli",
    "cli": "cli",
    "pipeline": "pipeline",
    "report": "pipeline",
    "checkpoint": "checkpoint",
    **dict.fromkeys(
        ["config", "schema", "metrics", "runtime", "storage", "errors", "bleu"], "shared"
    ),
}
FOLDERS = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """'corpus.vocab' for job/corpus/vocab.py, 'config' for job/config.py."""
    return ".".join(path.relative_to(package).with_suffix("").parts)


def modules(package: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if p.name != "__init__.py")


def job_imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """The job modules (or packages) `path` imports, at module level or inside functions, as
    dotted names below job: `from job.corpus import vocab` gives 'corpus.vocab', `from
    job.corpus.vocab import Vocab` too, `import job.model.search` gives 'model.search'."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "job":
            base = node.module.split(".")[1:]
            for alias in node.names:
                sub = package.joinpath(*base, alias.name)
                if sub.with_suffix(".py").exists() or (sub / "__init__.py").exists():
                    found.add(".".join([*base, alias.name]))
                elif base:
                    found.add(".".join(base))
                else:  # `from job import Translator`: the package's own API
                    found.add("")
        elif isinstance(node, ast.Import):
            found |= {a.name[4:] for a in node.names if a.name.startswith("job.")}
    return found - {module_name(path, package)}


def layer_of(name: str) -> str:
    """The layer of a dotted module name below job ('' is the package's own API: the top)."""
    head = name.split(".")[0]
    if name == "":
        return "cli"
    if head in FOLDERS:
        return head
    assert head in TOP_LEVEL, f"job/{head}.py: give it a layer in tests/test_layout.py TOP_LEVEL"
    return TOP_LEVEL[head]


def rank(layer: str) -> int:
    return next(i for i, floor in enumerate(LAYERS) if layer in floor)


def upward_imports(package: Path = PACKAGE) -> list[str]:
    """Every import of a module from a layer above its own, or across one floor."""
    wrong = []
    for path in modules(package):
        name = module_name(path, package)
        own = layer_of(name)
        for dep in sorted(job_imports(path, package)):
            other = layer_of(dep)
            if other != own and rank(other) >= rank(own):
                wrong.append(f"job.{name} ({own}) imports job.{dep} ({other})")
    return wrong


def test_every_folder_and_top_level_module_has_a_layer():
    layers = set().union(*LAYERS)
    assert set(FOLDERS) <= layers, set(FOLDERS) - layers
    for path in PACKAGE.glob("*.py"):
        if path.name != "__init__.py":
            assert path.stem in TOP_LEVEL, f"{path.name}: a top-level module needs a layer"


def test_imports_run_downwards():
    assert not upward_imports(), upward_imports()


def test_import_graph_has_no_cycles():
    graph = {module_name(p): job_imports(p) for p in modules()}
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


@pytest.mark.parametrize("path", modules(), ids=module_name)
def test_module_fits_on_a_few_screens(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module_name(path)}: {lines} lines; split it by concern"


@pytest.mark.parametrize("path", [p for p in modules() if p.name != "__main__.py"], ids=module_name)
def test_module_has_a_test_file_in_the_mirrored_folder(path):
    rel = path.relative_to(PACKAGE)
    expected = ROOT / "tests" / rel.parent / f"test_{rel.name}"
    assert expected.exists(), f"job/{rel} has no {expected.relative_to(ROOT)}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_folder_says_what_it_holds_and_may_import(folder):
    doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
    assert doc and "May import" in doc, f"job/{folder}/__init__.py: say what lives here"


def _package(tmp_path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "job" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {Path(n).parent for n in files if "/" in n}:
        (tmp_path / "job" / folder / "__init__.py").touch()
    return tmp_path / "job"


def test_the_checks_can_see_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    package = _package(
        tmp_path,
        {
            "corpus/vocab.py": "from job.model.search import beam\n",  # corpus -> model: up
            "model/search.py": "def f():\n    from job.corpus import vocab\n",
            "training/worker.py": "from job.inference import bulk\n",  # across the floor
            "inference/bulk.py": "import job.config\n",
            "config.py": "",
        },
    )
    monkeypatch.setattr(
        "test_layout.FOLDERS", sorted(p.name for p in package.iterdir() if p.is_dir())
    )
    assert job_imports(package / "corpus/vocab.py", package) == {"model.search"}
    assert job_imports(package / "model/search.py", package) == {"corpus.vocab"}
    assert upward_imports(package) == [
        "job.corpus.vocab (corpus) imports job.model.search (model)",
        "job.training.worker (training) imports job.inference.bulk (inference)",
    ]
