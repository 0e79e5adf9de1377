"""The release image on the real Docker engine and registry: built, pushed, run by digest, scored."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared import buildcontext
from shared.adapters.local import containers
from shared.adapters.local.docker_builder import BuildRequest, DockerBuilder

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "127.0.0.1:5000"  # scripts/local-stack.sh's default
REPOSITORY = f"{REGISTRY}/shipbot-test/model-api"
MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def build(client, model_dir, *, version: str, commit: str = "0" * 40):
    return DockerBuilder(client=client).build(BuildRequest(
        source=ROOT, model_dir=model_dir, repository=REPOSITORY, tag=f"test-{version}-{uuid.uuid4().hex[:8]}",
        model_name="diabetes", model_version=version, git_commit=commit, source_url="file:///shipbot",
        release_id=f"rel-{version}"))


def test_release_image_is_pushed_runs_by_digest_and_scores_like_scikit_learn(docker_client, train_model, free_port):
    model_dir = train_model(1.0)
    commit = uuid.uuid4().hex + "abcdefgh"
    built = build(docker_client, model_dir, version="1", commit=commit)

    manifest = httpx.head(f"http://{REGISTRY}/v2/shipbot-test/model-api/manifests/{built.digest}",
                          headers={"Accept": MANIFEST_TYPES})
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == built.digest

    labels = docker_client.images.get(built.ref).labels
    assert labels["org.opencontainers.image.revision"] == commit
    assert labels["org.opencontainers.image.source"] == "file:///shipbot"
    assert labels["org.opencontainers.image.created"].startswith("20")
    assert labels["dev.shipbot.model.sha256"] == buildcontext.sha256_file(model_dir / "model.joblib")
    assert (labels["dev.shipbot.model.name"], labels["dev.shipbot.model.version"]) == ("diabetes", "1")

    # One worker: with one per CPU, a /readyz right after the first 200 can reach a worker still loading.
    container = containers.run_model_api(docker_client, built.ref, name=f"shipbot-test-{free_port}",
                                         host_port=free_port, environment={"MODEL_API_WORKERS": "1"})
    base = f"http://127.0.0.1:{free_port}"
    try:
        containers.wait_ready(base, timeout_s=90, container=container)
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}
        assert httpx.get(f"{base}/version").json() == {
            "model_name": "diabetes", "model_version": "1", "model_sha256": built.model_sha256,
            "git_commit": commit, "image_tag": f"{REPOSITORY}:{built.tag}", "build_id": built.build_id,
            "release_id": "rel-1",
        }

        request = json.loads((model_dir / "sample-request.json").read_text())
        expected = joblib.load(model_dir / "model.joblib").predict(np.array(request["data"]))
        scored = httpx.post(f"{base}/score", json=request)
        assert scored.status_code == 200
        np.testing.assert_allclose(scored.json()["result"], expected, rtol=0, atol=1e-6)

        rows = np.array(request["data"])
        infer = httpx.post(f"{base}/v2/models/diabetes/infer", json={"inputs": [
            {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]})
        assert infer.status_code == 200
        (output,) = infer.json()["outputs"]
        np.testing.assert_allclose(output["data"], expected, rtol=0, atol=1e-6)
        assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}

        # Concurrent requests go through the server's batcher and each gets its own row's prediction.
        many = [[float(i)] * rows.shape[1] for i in range(48)]
        answers = asyncio.run(post_concurrently(f"{base}/score", [{"data": [row]} for row in many]))
        model = joblib.load(model_dir / "model.joblib")
        for answer, row in zip(answers, many, strict=True):
            np.testing.assert_allclose(answer["result"], model.predict(np.array([row])), rtol=0, atol=1e-6)
        metrics = {s.name: s.value for f in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)
                   for s in f.samples if not s.labels}
        assert metrics["model_api_batch_requests_sum"] == 1 + len(many)  # summed over both workers

        container.reload()
        assert container.attrs["Config"]["User"] == "model-api"
        # Only the runtime its model needs: a scikit-learn image carries no onnxruntime.
        assert container.exec_run(["python", "-c", "import onnxruntime"]).exit_code != 0
        assert container.exec_run(["python", "-c", "import sklearn"]).exit_code == 0
    finally:
        container.remove(force=True)


async def post_concurrently(url: str, bodies: list[dict]) -> list[dict]:
    async with httpx.AsyncClient(timeout=30) as client:
        responses = await asyncio.gather(*(client.post(url, json=body) for body in bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    return [r.json() for r in responses]


def test_a_new_model_rebuilds_only_the_model_layer(docker_client, train_model):
    first = build(docker_client, train_model(1.0), version="1")
    second = build(docker_client, train_model(2.0), version="2")

    layers_first = docker_client.images.get(first.ref).attrs["RootFS"]["Layers"]
    layers_second = docker_client.images.get(second.ref).attrs["RootFS"]["Layers"]
    assert first.model_sha256 != second.model_sha256
    assert layers_first[:-1] == layers_second[:-1], "dependency and code layers were rebuilt for a new model"
    assert layers_first[-1] != layers_second[-1]


def test_a_model_folder_without_exactly_one_model_file_does_not_build(docker_client, train_model, tmp_path):
    from shared import errors

    with pytest.raises(errors.BuildFailed, match="exactly one model file"):
        build(docker_client, tmp_path, version="0")
