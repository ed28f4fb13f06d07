"""The layers: the core library knows nothing of the orchestrator; tasks live only in `tasks/`,
flows (and the CLI above them) only in `flows/`."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _decorators(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if isinstance(target, ast.Name):
                    found.add(target.id)
    return found


def test_the_core_imports_neither_flows_tasks_nor_prefect():
    offenders = {
        str(path.relative_to(REPO)): sorted(_imports(path) & {"flows", "tasks", "prefect"})
        for path in sorted((REPO / "datatuner_core").rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(offenders) > 20  # the scan saw the package


def test_tasks_import_no_flows_and_flows_define_no_tasks():
    for path in sorted((REPO / "tasks").rglob("*.py")):
        assert "flows" not in _imports(path), path
    defined = {p.name: _decorators(p) & {"task", "io_task", "compute_task"}
               for p in (REPO / "flows").rglob("*.py")}  # fmt: skip
    assert {k: v for k, v in defined.items() if v} == {}
    assert "flow" in _decorators(REPO / "flows" / "regenerate.py")


def test_the_entry_point_is_the_cli_above_the_flows():
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'datatuner = "flows.cli:main"' in text
    assert not (REPO / "datatuner_core" / "cli.py").exists()
