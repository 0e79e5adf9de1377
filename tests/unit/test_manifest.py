"""shipbot.toml: the three shapes, their defaults, and every bad manifest refused with file, key and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared import manifest
from shared.manifest import ManifestError


def repo(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "repo"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    return root


FLASK = "FROM python:3.11-slim\nCOPY . /app\nEXPOSE 5000\nCMD gunicorn app:app\n"


def test_no_manifest_and_no_dockerfile_is_the_model_only_shape_with_model_apis_contract(tmp_path):
    got = manifest.load(repo(tmp_path, {"README.md": "x"}))
    assert (got.shape, got.smoke.port, got.smoke.ready_path, got.smoke.identity_path) == \
        ("model", 5001, "/readyz", "/version")
    assert got.smoke.expect_json == "sample-response.json" and got.smoke.request == "sample-request.json"


def test_a_dockerfile_at_the_root_without_a_manifest_is_an_own_image_serving_its_exposed_port(tmp_path):
    got = manifest.load(repo(tmp_path, {"Dockerfile": FLASK}))
    assert (got.shape, got.build.dockerfile, got.build.model_path, got.smoke.port) == ("image", "Dockerfile",
                                                                                      "model/", 5000)
    assert got.smoke.identity_path is None and got.smoke.ready_path == "/"


def test_an_own_image_manifest_with_its_smoke_contract(tmp_path):
    got = manifest.load(repo(tmp_path, {"docker/Dockerfile": FLASK, "shipbot.toml": """
[build]
dockerfile = "docker/Dockerfile"
context = "."
target = "serve"
model_path = "app/model/"

[smoke]
port = 8000
ready_path = "/healthcheck"
expect_keys = ["result"]
"""}))
    assert got.shape == "image" and got.build.target == "serve" and got.build.model_path == "app/model/"
    assert (got.smoke.port, got.smoke.ready_path, got.smoke.expect_keys) == (8000, "/healthcheck", ["result"])


def test_a_score_py_manifest_is_served_by_model_api(tmp_path):
    got = manifest.load(repo(tmp_path, {"score.py": "def init(): ...\ndef run(data): ...\n",
                                        "conda_dependencies.yml": "dependencies: []\n", "shipbot.toml": """
[serve]
entry_script = "score.py"
requirements = "conda_dependencies.yml"
"""}))
    assert (got.shape, got.serve.entry_script, got.smoke.port, got.smoke.ready_path) == ("score", "score.py", 5001,
                                                                                        "/readyz")


@pytest.mark.parametrize(("files", "message"), [
    ({"shipbot.toml": "[build]\ndockerfile = 'Dockerfile'\ncolour = 'blue'\n", "Dockerfile": FLASK},
     "shipbot.toml, [build] colour (line 3): unknown key"),
    ({"shipbot.toml": "[smoke]\n# the port\nport = '8000'\n"},
     "shipbot.toml, [smoke] port (line 3): Input should be a valid integer"),
    ({"shipbot.toml": "[serve]\nrequirements = 'r.txt'\n", "r.txt": ""},
     "shipbot.toml, [serve] entry_script (line 1): required"),
    ({"shipbot.toml": "[build]\ndockerfile = '../Dockerfile'\n"},
     "shipbot.toml, [build] dockerfile (line 2): '../Dockerfile' must be a relative path inside the repository"),
    ({"shipbot.toml": "[build]\ndockerfile = '/etc/Dockerfile'\n"}, "must be a relative path inside the repository"),
    ({"shipbot.toml": "[build]\ndockerfile = 'docker/Dockerfile'\n"},
     "shipbot.toml, [build] dockerfile (line 2): docker/Dockerfile is not a file of the repository"),
    ({"shipbot.toml": "[build]\n", "Dockerfile": "FROM scratch\n"},
     "shipbot.toml, [smoke] port (line 1): Dockerfile EXPOSEs no port"),
    ({"shipbot.toml": "[build]\n[serve]\nentry_script = 's.py'\n", "Dockerfile": FLASK, "s.py": ""},
     "shipbot.toml, [serve] (line 2): [build] and [serve] exclude each other"),
    ({"shipbot.toml": "[smoke]\nready_path = 'healthz'\n"}, "shipbot.toml, [smoke] ready_path (line 2): 'healthz' is not"),
    ({"shipbot.toml": "[build\n"}, "shipbot.toml is not valid TOML: "),
    ({"shipbot.toml": "[smoke]\nrequest = '../../etc/passwd'\n"}, "[smoke] request (line 2): '../../etc/passwd' must"),
], ids=["unknown-key", "wrong-type", "missing-key", "escapes", "absolute", "no-dockerfile", "no-port", "both-shapes",
        "not-a-path", "bad-toml", "request-escapes"])
def test_a_bad_manifest_is_refused_with_file_key_and_line(tmp_path, files, message):
    with pytest.raises(ManifestError) as caught:
        manifest.load(repo(tmp_path, files))
    assert message in str(caught.value)


def test_a_dockerfile_that_is_a_symlink_out_of_the_repository_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Dockerfile").write_text(FLASK)
    root = repo(tmp_path, {"shipbot.toml": "[build]\ndockerfile = 'Dockerfile'\n"})
    os.symlink(outside / "Dockerfile", root / "Dockerfile")
    with pytest.raises(ManifestError, match=r"\[build\] dockerfile \(line 2\): Dockerfile leads out of the repository"):
        manifest.load(root)


def test_a_manifest_that_is_a_symlink_is_refused(tmp_path):
    root = repo(tmp_path, {"elsewhere.toml": "[smoke]\n"})
    os.symlink(root / "elsewhere.toml", root / "shipbot.toml")
    with pytest.raises(ManifestError, match="must be a regular file"):
        manifest.load(root)


def test_the_fingerprint_changes_with_the_manifest_and_the_dockerfile_and_nothing_else(tmp_path):
    root = repo(tmp_path, {"Dockerfile": FLASK, "app.py": "print(1)\n"})
    first = manifest.load(root).fingerprint(root)
    (root / "app.py").write_text("print(2)\n")
    assert manifest.load(root).fingerprint(root) == first  # code is in the commit already
    (root / "Dockerfile").write_text(FLASK.replace("5000", "5002"))
    second = manifest.load(root).fingerprint(root)
    assert second != first
    (root / "shipbot.toml").write_text("[build]\n[smoke]\nready_path = '/healthcheck'\n")
    assert manifest.load(root).fingerprint(root) not in (first, second)


SCORE = {"score.py": "def init(): ...\ndef run(data): ...\n"}


def serve(tmp_path, requirements_name: str, text: str):
    root = repo(tmp_path, {**SCORE, requirements_name: text,
                           "shipbot.toml": f"[serve]\nentry_script = 'score.py'\nrequirements = '{requirements_name}'\n"})
    return root, manifest.load(root).serve


def test_a_requirements_txt_is_installed_as_written(tmp_path):
    root, spec = serve(tmp_path, "requirements.txt", "# pinned\nscikit-learn==1.5.2\n\njoblib>=1.3\n")
    assert manifest.pip_requirements(root, spec) == ["scikit-learn==1.5.2", "joblib>=1.3"]


def test_an_azure_ml_environment_file_gives_its_plain_conda_entries_and_its_pip_list(tmp_path):
    root, spec = serve(tmp_path, "conda_dependencies.yml", """\
name: diabetes_regression_scoring_env
channels: [defaults]
dependencies:
  - python=3.8.5
  - numpy=1.19.5
  - scikit-learn
  - pip
  - pip:
      - azureml-defaults==1.38.0
      - inference-schema[numpy-support]==1.3.0
""")
    assert manifest.pip_requirements(root, spec) == [
        "numpy==1.19.5", "scikit-learn", "azureml-defaults==1.38.0", "inference-schema[numpy-support]==1.3.0"]


@pytest.mark.parametrize("entry", ["conda-forge::lightgbm", "numpy=1.19.5=py38h7e4f40d_0", "[nested]"])
def test_a_conda_entry_pip_cannot_install_is_refused_by_name(tmp_path, entry):
    root, spec = serve(tmp_path, "env.yml", f"dependencies:\n  - {entry}\n")
    with pytest.raises(ManifestError, match=r"\[serve\] requirements: env.yml: dependency .* is not one pip"):
        manifest.pip_requirements(root, spec)


def test_an_environment_file_that_is_not_yaml_or_not_conda_is_refused(tmp_path):
    root, spec = serve(tmp_path, "env.yml", "dependencies: [unclosed\n")
    with pytest.raises(ManifestError, match="is not YAML"):
        manifest.pip_requirements(root, spec)
    root2, spec2 = serve(tmp_path / "b", "env.yml", "dependencies: numpy\n")
    with pytest.raises(ManifestError, match="expected a conda environment"):
        manifest.pip_requirements(root2, spec2)


# -- [evaluate]: the quality gate -----------------------------------------------------------------------------------
EVAL_CSV = "a,b,target\n1,2,3\n4,5,9\n"


def test_an_evaluate_section_is_read_with_its_defaults_and_joins_the_fingerprint(tmp_path):
    root = repo(tmp_path, {"eval/test.csv": EVAL_CSV, "shipbot.toml": '[evaluate]\ndata = "eval/test.csv"\n'
                                                                        'label = "target"\nmetric = "rmse"\n'})
    got = manifest.load(root)

    assert (got.evaluate.data, got.evaluate.metric, got.evaluate.direction, got.evaluate.tolerance,
            got.evaluate.batch) == ("eval/test.csv", "rmse", None, 0.0, 500)
    without = manifest.load(repo(tmp_path / "plain", {"README.md": "x"}))
    assert got.fingerprint(root) != without.fingerprint(root)


@pytest.mark.parametrize("section, says", [
    ('data = "eval/missing.csv"\nlabel = "y"\nmetric = "rmse"', "[evaluate] data (line 2): eval/missing.csv is not a file"),
    ('data = "../x.csv"\nlabel = "y"\nmetric = "rmse"', "must be a relative path inside the repository"),
    ('data = "eval/test.csv"\nlabel = "y"\nmetric = "mape"', "[evaluate] metric (line 4)"),
    ('data = "eval/test.csv"\nlabel = "y"\nmetric = "rmse"\ntolerance = -1', "[evaluate] tolerance (line 5)"),
    ('data = "eval/test.csv"\nlabel = "y"\nmetric = "rmse"\ndirection = "up"', "[evaluate] direction (line 5)"),
    ('data = "eval/test.csv"\nmetric = "rmse"', "[evaluate] label (line 1): required"),
], ids=["missing-file", "outside", "unknown-metric", "negative-tolerance", "bad-direction", "no-label"])
def test_a_bad_evaluate_section_is_refused_with_its_key_and_line(tmp_path, section, says):
    root = repo(tmp_path, {"eval/test.csv": EVAL_CSV, "shipbot.toml": f"[evaluate]\n{section}\n"})

    with pytest.raises(manifest.ManifestError) as refused:
        manifest.load(root)

    assert says in str(refused.value)


def plan_gated(tmp_path: Path, csv: str, metric: str):
    """The build plan of a model-only app whose [evaluate] names `csv` (with the label column `target`)."""
    import shutil

    from shared import buildplan

    root = repo(tmp_path, {"eval/test.csv": csv, "shipbot.toml": '[evaluate]\ndata = "eval/test.csv"\n'
                                                                   f'label = "target"\nmetric = "{metric}"\n'})
    shutil.copytree(Path(__file__).parents[2] / "model_api", root / "model_api")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.joblib").write_bytes(b"weights")
    return buildplan.plan(buildplan.Inputs(source=root, model_dir=model, image="r/a:t", build_id="b",
                                           model_name="m", model_version="1"))


def test_the_build_plan_labels_the_image_with_the_spec_and_the_sets_sha256(tmp_path):
    import hashlib

    from shared import evaluation

    planned = plan_gated(tmp_path, EVAL_CSV, "r2")

    spec = evaluation.Spec.of_labels(planned.labels)
    assert (spec.data, spec.label, spec.metric, spec.direction) == ("eval/test.csv", "target", "r2", "higher")
    assert spec.sha256 == hashlib.sha256(EVAL_CSV.encode()).hexdigest()


@pytest.mark.parametrize("csv, says", [
    ("a,b\n1,2\n", "has no column 'target'"),
    ("a,b,target\n1,x,3\n", "row 2 holds something that is not a number"),
    ("a,b,target\n1,2\n", "row 2 has 2 values; the header names 3"),
    ("a,b,target\n", "a header and no rows"),
    ("a,b,target\n1,nan,2\n", "row 2 holds a value that is not finite"),
])
def test_an_evaluation_set_the_gate_could_not_use_fails_the_build_naming_the_row_or_column(tmp_path, csv, says):
    from shared import errors

    with pytest.raises(errors.BuildFailed) as failed:
        plan_gated(tmp_path, csv, "rmse")

    assert str(failed.value).startswith("shipbot.toml: [evaluate] data eval/test.csv: ") and says in str(failed.value)
