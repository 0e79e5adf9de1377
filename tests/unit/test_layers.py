"""The rings of STYLE.md, checked: the engine's core decides and never touches the outside world.

Core modules may not import azure, docker, kubernetes, httpx, subprocess or socket, nor read os.environ;
adapters do the I/O, functions/ translate. (import-linter would say the same with a config file; the rule is
small enough to read here.)
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CORE = ["errors", "events", "webhooks", "releases", "ports", "planning", "engine", "operations", "jobs", "settings"]
FORBIDDEN = {"azure", "docker", "kubernetes", "httpx", "subprocess", "socket", "requests", "urllib.request"}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_does_no_io(module):
    path = ROOT / "shared" / f"{module}.py"
    used = {name for name in imports(path) if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN}
    assert not used, f"shared/{module}.py imports {sorted(used)}"
    assert "os.environ" not in path.read_text() and "getenv" not in path.read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "shared").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_shared_never_imports_azure_functions(path):
    assert not any(name.startswith("azure.functions") for name in imports(path))


def test_functions_only_translate():
    for path in (ROOT / "functions").glob("*.py"):
        assert not {n for n in imports(path) if n.startswith(("shared.adapters", "docker", "azure.storage"))}, path
