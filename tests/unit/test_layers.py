"""The rings of docs/architecture.md, checked: the engine's core decides and never touches the outside world.

Core modules may not import azure, docker, kubernetes, httpx, subprocess or socket, nor read os.environ;
adapters do the I/O, functions/ translate. (import-linter would say the same with a config file; the rule is
small enough to read here.)
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CORE = ["errors", "events", "webhooks", "releases", "ports", "planning", "engine", "operations", "jobs", "settings",
        "modelfiles", "bot", "fleet", "ncrontab", "evaluation", "gate", "quality"]
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


@pytest.mark.parametrize("path", sorted(p for package in ("shared", "cli", "stack", "functions")
                                        for p in (ROOT / package).rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_what_the_shipbot_package_installs_never_imports_model_api(path):
    """cli, stack, shared and functions never import model_api: it ships inside release images, and as the
    data shared/buildplan.py puts into a score.py app's build context."""
    assert not any(name == "model_api" or name.startswith("model_api.") for name in imports(path))


def test_the_package_carries_model_api_as_data_with_its_dockerfile_and_requirements():
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "model_api" in setuptools["packages"]["find"]["include"]
    data = setuptools["package-data"]["model_api"]
    from shared import buildplan

    assert buildplan.MODEL_API == ROOT / "model_api"
    for name in ("Dockerfile", "requirements.txt", "requirements-server.txt", "requirements-sklearn.txt",
                 "requirements-onnx.txt", "requirements-mlflow.txt"):
        assert any(Path(name).match(pattern) for pattern in data), name


def test_the_core_and_model_api_agree_on_model_files_and_their_runtimes(tmp_path):
    from model_api import runtimes
    from shared import modelfiles

    assert (modelfiles.BY_SUFFIX, modelfiles.ALL) == (runtimes.BY_SUFFIX, runtimes.ALL)
    for files in ([], ["m.joblib"], ["m.onnx"], ["a.pkl", "b.onnx"], ["readme.txt"]):
        folder = tmp_path / "-".join(files or ["none"])
        folder.mkdir()
        for name in files:
            (folder / name).write_bytes(b"x")
        assert modelfiles.runtimes_for(folder) == runtimes.for_model_dir(folder)
        assert modelfiles.model_files(folder) == runtimes.model_files(folder)


def test_the_core_and_model_api_agree_on_mlflow_flavours_and_input_examples(tmp_path):
    """model_api reads MLmodel with its own copy of the rules: both pick the same weights and format, refuse the
    same folders, and make the same request of the input example."""
    import json
    import shutil

    import yaml

    from model_api import mlflow_model
    from shared import modelfiles

    variants = {
        "as-saved": lambda d: None,
        "pyfunc-sklearn": lambda d: d["flavors"].pop("sklearn"),
        "onnx": lambda d: d.update(flavors={"onnx": {"data": "model.onnx"}}),
        "pyfunc-onnx": lambda d: d.update(flavors={"python_function": {"loader_module": "mlflow.onnx",
                                                                       "data": "m.onnx"}}),
        "pyfunc-custom": lambda d: d.update(flavors={"python_function": {"loader_module": "mlflow.pyfunc.model",
                                                                         "python_model": "python_model.pkl"}}),
        "pyfunc-xgboost": lambda d: d.update(flavors={"python_function": {"loader_module": "mlflow.xgboost"},
                                                      "xgboost": {"data": "model.xgb"}}),
        "trusted": lambda d: d["flavors"]["sklearn"].update(skops_trusted_types=["_operator.neg"]),
        "unknown": lambda d: d.update(flavors={"keras": {}}),
        "bad-format": lambda d: d["flavors"]["sklearn"].update(serialization_format="joblib"),
        "outside": lambda d: d["flavors"]["sklearn"].update(pickled_model="/etc/passwd"),
        "tensor-example": lambda d: None,
    }
    for name, change in variants.items():
        folder = shutil.copytree(ROOT / "tests/fixtures/mlflow/sklearn-skops", tmp_path / name)
        doc = yaml.safe_load((folder / "MLmodel").read_text())
        change(doc)
        if name == "tensor-example":
            (folder / "input_example.json").write_text(json.dumps({"inputs": [[1.0, 2.0]]}))
        try:
            core = modelfiles.flavour(doc)
        except ValueError as e:
            core = str(e)
        try:
            found = mlflow_model.flavour(folder, doc)
            image = modelfiles.Flavour(found.runtime, found.path.relative_to(folder).as_posix(), found.serialization,
                                       found.trusted)
        except ValueError as e:
            image = str(e)
        assert core == image, name
        assert modelfiles.example_request(folder, doc) == mlflow_model.example_request(folder, doc), name
