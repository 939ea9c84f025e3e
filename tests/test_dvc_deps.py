"""Each stage in dvc.yaml depends on exactly the library modules its script imports, so that
editing a module reruns only the stages that run it."""

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

LIBRARY = ROOT / "src"
PACKAGE = "pipeline"


def _module_file(module: str) -> Path:
    path = LIBRARY / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(path: Path) -> set[str]:
    """The `pipeline` modules that the file imports itself (absolute or relative imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                package = path.relative_to(LIBRARY).parent.parts
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from pipeline import data` imports the module pipeline.data.
            found |= {
                f"{module}.{alias.name}"
                for alias in node.names
                if _module_file(f"{module}.{alias.name}").is_file()
            }
    return {m for m in found if m.split(".")[0] == PACKAGE and _module_file(m).is_file()}


def library_files(script: Path) -> set[str]:
    """Files of every library module the script imports, directly or through other modules."""
    seen: set[str] = set()
    todo = list(imported_modules(script))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += imported_modules(_module_file(module))
    return {_module_file(m).relative_to(ROOT).as_posix() for m in seen}


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def script_of(stage: dict) -> str:
    words = stage["cmd"].split()
    return words[words.index("python") + 1]


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_are_exactly_the_modules_its_script_imports(name):
    stage = stages()[name]
    script = script_of(stage)
    deps = [d for d in stage["deps"] if isinstance(d, str)]
    assert script in deps, f"{name}: its script {script} must be a dependency"
    assert "src/pipeline" not in deps, f"{name}: name the modules, not the whole package"
    listed = {d for d in deps if d.startswith("src/")}
    expected = library_files(ROOT / script)
    assert listed == expected, (
        f"dvc.yaml stage '{name}' drifted from the code: add {sorted(expected - listed)}, "
        f"remove {sorted(listed - expected)}"
    )


def test_import_closure_follows_modules_through_each_other():
    # stages/clean.py imports pipeline.data, which imports pipeline.text: both are deps.
    files = library_files(ROOT / "stages" / "clean.py")
    assert {"src/pipeline/data.py", "src/pipeline/text.py"} <= files
    assert "src/pipeline/model.py" not in files  # clean never loads torch code
