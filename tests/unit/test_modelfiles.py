"""The model folder's rules in the core (shared/modelfiles.py) and the build plan of an MLflow model: which
flavour serves it, what identifies it, the sample request made of its input example, and what is refused."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from shared import buildplan, errors, modelfiles

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "mlflow"


@pytest.fixture
def skops_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / "sklearn-skops", tmp_path / "model"))


def plan(model_dir: Path, source: Path = ROOT, **changes) -> buildplan.Plan:
    return buildplan.plan(buildplan.Inputs(source=source, model_dir=model_dir, image="r/app:t", build_id="b1",
                                           model_name="diabetes", model_version="3", **changes))


def test_an_mlflow_folder_is_identified_by_every_artifact_and_not_by_the_sidecars(skops_dir):
    before = modelfiles.fingerprint(skops_dir)
    (skops_dir / "sample-request.json").write_text("{}")
    assert modelfiles.fingerprint(skops_dir) == before

    (skops_dir / "conda.yaml").write_text("name: other\n")
    assert modelfiles.fingerprint(skops_dir) != before


def test_the_folder_digest_is_the_same_from_any_order_and_names_each_file_by_path(skops_dir):
    pairs = [(rel, modelfiles.sha256_file(skops_dir / rel)) for rel in modelfiles.artifact_files(skops_dir)]

    assert modelfiles.folder_digest(reversed(pairs)) == modelfiles.folder_digest(pairs) == \
        modelfiles.fingerprint(skops_dir)
    renamed = [("x/" + rel, sha) for rel, sha in pairs]
    assert modelfiles.folder_digest(renamed) != modelfiles.folder_digest(pairs)


def test_a_one_file_folder_is_still_identified_by_its_model_file(tmp_path):
    (tmp_path / "model.joblib").write_bytes(b"weights")
    (tmp_path / "sample-request.json").write_text("{}")

    assert modelfiles.fingerprint(tmp_path) == hashlib.sha256(b"weights").hexdigest()
    assert modelfiles.runtimes_for(tmp_path) == ("sklearn",)


@pytest.mark.parametrize("form", ["skops", "cloudpickle"])
def test_an_mlflow_sklearn_model_needs_the_sklearn_and_mlflow_runtimes(tmp_path, form):
    folder = Path(shutil.copytree(FIXTURES / f"sklearn-{form}", tmp_path / "m"))

    assert modelfiles.runtimes_for(folder) == ("sklearn", "mlflow")
    assert modelfiles.flavour(modelfiles.read_mlmodel(folder)).serialization == form


def test_the_plan_of_an_mlflow_model_installs_its_runtimes_and_smoke_tests_with_its_input_example(skops_dir):
    expected = modelfiles.fingerprint(skops_dir)

    planned = plan(skops_dir, model_sha256=expected)

    assert planned.model_sha256 == expected
    assert planned.build_args["MODEL_RUNTIMES"] == "sklearn mlflow"
    example = json.loads((skops_dir / "input_example.json").read_text())
    assert json.loads((skops_dir / "sample-request.json").read_text()) == {"data": example["data"]}
    assert not (skops_dir / "sample-response.json").exists()


def test_a_sample_request_that_comes_with_the_version_is_kept(skops_dir):
    (skops_dir / "sample-request.json").write_text('{"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}')

    plan(skops_dir)

    assert json.loads((skops_dir / "sample-request.json").read_text())["data"] == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]


def test_an_mlflow_model_whose_artifacts_changed_since_the_release_was_planned_is_not_built(skops_dir):
    planned_with = modelfiles.fingerprint(skops_dir)
    (skops_dir / "model.skops").write_bytes(b"other bytes")

    with pytest.raises(errors.BuildFailed, match="model diabetes/3 has sha256 .* the release expects " + planned_with):
        plan(skops_dir, model_sha256=planned_with)


@pytest.mark.parametrize("change, says", [
    (lambda d: d.update(flavors={"transformers": {}}), "flavours (transformers) are not served; model_api serves"),
    (lambda d: d["flavors"]["sklearn"].update(pickled_model="gone.skops"), "names gone.skops as the model, and the "
                                                                           "folder has no such file"),
    (lambda d: d.pop("saved_input_example_info"), "no input example of numeric rows"),
], ids=["unknown-flavour", "missing-weights", "no-example"])
def test_an_mlflow_model_that_cannot_be_served_or_checked_fails_its_build_with_the_reason(skops_dir, change, says):
    doc = yaml.safe_load((skops_dir / "MLmodel").read_text())
    change(doc)
    (skops_dir / "MLmodel").write_text(yaml.safe_dump(doc))

    with pytest.raises(errors.BuildFailed) as failed:
        plan(skops_dir)

    assert str(failed.value).startswith("model diabetes/3: ") and says in str(failed.value)


@pytest.mark.parametrize("example, rows", [
    ({"columns": ["a", "b"], "data": [[1, 2.5]]}, [[1, 2.5]]),
    ({"inputs": [[0.5, 1]]}, [[0.5, 1]]),
    ([[3, 4]], [[3, 4]]),
    ({"columns": ["text"], "data": [["hello"]]}, None),
    ({"inputs": {"a": [1]}}, None),
    ([], None),
], ids=["split-frame", "tensor", "bare-rows", "strings", "named-tensors", "empty"])
def test_an_input_example_becomes_rows_of_numbers_or_nothing(tmp_path, example, rows):
    (tmp_path / "input_example.json").write_text(json.dumps(example))
    mlmodel = {"flavors": {}, "saved_input_example_info": {"artifact_path": "input_example.json"}}

    request = modelfiles.example_request(tmp_path, mlmodel)

    assert request == ({"data": rows} if rows is not None else None)


# -- a custom python_function: MLflow loads it, with the model's own requirements ---------------------------------
@pytest.fixture
def pyfunc_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / "pyfunc-custom", tmp_path / "model"))


def test_a_custom_pyfunc_model_needs_only_the_pyfunc_runtime_and_its_plan_carries_its_requirements(pyfunc_dir):
    import io
    import tarfile

    assert modelfiles.runtimes_for(pyfunc_dir) == ("pyfunc",)
    planned = plan(pyfunc_dir)
    buffer = io.BytesIO()
    planned.write(buffer)
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as tar:
        requirements = tar.extractfile(buildplan.PYFUNC_REQUIREMENTS).read().decode().splitlines()
        names = tar.getnames()

    assert planned.build_args["MODEL_RUNTIMES"] == "pyfunc"
    assert requirements[0] == "mlflow-skinny==3.17.0"
    assert "cloudpickle==3.1.3" in requirements and "pandas==3.1.1" in requirements
    assert "model/python_model.pkl" in names and "model/sample-request.json" in names


@pytest.mark.parametrize("lines, expect", [
    ("mlflow[extras]==3.1.0\n# a comment\n\nscikit-learn>=1.5,<2\t# inline\n",
     ["mlflow-skinny==3.1.0", "scikit-learn>=1.5,<2", "numpy==2.4.6", "pandas==3.1.1"]),
    ("mlflow-skinny==3.17.0\nnumpy==1.26.4\n", ["mlflow-skinny==3.17.0", "numpy==1.26.4", "pandas"]),
    ("MLflow==3.17.0\npandas==2.2.3\nnumpy==1.26.4\n", ["mlflow-skinny==3.17.0", "pandas==2.2.3", "numpy==1.26.4"]),
    ("mlflow==3.17.0\nxgboost==3.0.0; python_version >= '3.10'\n",
     ["mlflow-skinny==3.17.0", "xgboost==3.0.0; python_version >= '3.10'", "numpy==2.4.6", "pandas==3.1.1"]),
], ids=["extras-comments", "own-numpy", "own-pins", "marker"])
def test_a_pyfunc_models_requirements_are_read_as_pip_takes_them(tmp_path, lines, expect):
    (tmp_path / "requirements.txt").write_text(lines)

    assert modelfiles.pyfunc_requirements(tmp_path).splitlines() == expect


@pytest.mark.parametrize("line", ["--index-url https://evil.example/simple", "-r other.txt",
                                  "-e git+https://x/y#egg=y", "pkg @ https://x/pkg.whl", "./wheels/pkg.whl",
                                  "evil-1.0-py3-none-any.whl", "m.tar.gz",
                                  'numpy; python_version>"0" --config-settings=--build-option=x',
                                  "numpy==2.4.6 --hash=sha256:00"])
def test_a_pyfunc_requirement_that_reaches_beyond_pypi_fails_the_build_with_its_line(pyfunc_dir, line):
    (pyfunc_dir / "requirements.txt").write_text(f"mlflow==3.17.0\n{line}\n")

    with pytest.raises(errors.BuildFailed, match=r"requirements.txt line 2 .* is not a plain requirement"):
        plan(pyfunc_dir)


def test_a_pyfunc_model_without_requirements_or_mlflow_in_them_fails_its_build(pyfunc_dir):
    (pyfunc_dir / "requirements.txt").write_text("numpy==2.4.6\n")
    with pytest.raises(errors.BuildFailed, match="does not name mlflow"):
        plan(pyfunc_dir)

    (pyfunc_dir / "requirements.txt").unlink()
    with pytest.raises(errors.BuildFailed, match="names requirements.txt as the model"):
        plan(pyfunc_dir)


def test_a_pyfunc_model_saved_with_another_python_than_the_base_image_fails_its_build_before_it(pyfunc_dir):
    doc = yaml.safe_load((pyfunc_dir / "MLmodel").read_text())
    doc["flavors"]["python_function"]["python_version"] = "3.12.4"
    (pyfunc_dir / "MLmodel").write_text(yaml.safe_dump(doc))

    with pytest.raises(errors.BuildFailed, match=r"saved with Python 3.12, and the image's base is python:3.11-slim"):
        plan(pyfunc_dir)
    assert plan(pyfunc_dir, base_image="python:3.12-slim").build_args["MODEL_RUNTIMES"] == "pyfunc"
