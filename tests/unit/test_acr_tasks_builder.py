"""AcrTasksBuilder against the fake ARM endpoint of ACR Tasks (tests/fakes/arm_acr.py: real SDK client, real
HTTPS) and real Azurite for the build-source upload and the run logs. The builds themselves are the fake's
outcomes here; tests/integration/test_acr_tasks_docker.py has the fake build them on the Docker engine."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import shlex
import tarfile
import tracemalloc
import types
import uuid

import pytest

from shared import contract, errors, ports
from shared.adapters.azure import acr_runs
from shared.adapters.azure.acr_tasks_builder import DOCKERFILE, AcrTasksBuilder
from shared.adapters.local import docker_builder
from tests.fakes import acr_inputs, arm_acr


@pytest.fixture
def fake():
    with arm_acr.FakeAcr() as fake:
        yield fake


def builder(fake: arm_acr.FakeAcr, **options) -> AcrTasksBuilder:
    return AcrTasksBuilder(client=fake.client(), resource_group=arm_acr.RESOURCE_GROUP,
                           registry_name=arm_acr.REGISTRY, login_server=fake.login_server, **options)


def request(fake: arm_acr.FakeAcr, models: acr_inputs.BytesModels, **changes) -> ports.BuildRequest:
    fields = {"release_id": f"r-{uuid.uuid4().hex[:12]}", "commit": "c" * 40, "model": models.model(),
              "repository": f"{fake.login_server}/shipbot/app", "tag": f"t-{uuid.uuid4().hex[:8]}",
              "source_url": "https://example.test/app.git"}
    return ports.BuildRequest(**{**fields, **changes})


def begin(fake: arm_acr.FakeAcr, acr: AcrTasksBuilder, **changes) -> tuple[str, ports.BuildRequest]:
    models = acr_inputs.BytesModels(acr_inputs.sample_files())
    build_request = request(fake, models, **changes)
    return acr.begin_build(build_request, acr_inputs.TreeSource(), models), build_request


def settle(acr: AcrTasksBuilder, build_id: str) -> ports.Build:
    for _ in range(10):  # the fake reveals a run's outcome within two reads
        build = acr.get_build(build_id)
        if build.state is not ports.BuildState.RUNNING:
            return build
    raise AssertionError(f"build {build_id} is still running")


def test_begin_build_returns_the_run_id_and_the_run_goes_on(fake):
    acr = builder(fake)

    build_id, _ = begin(fake, acr)

    assert build_id == fake.last_run().run_id
    assert acr.get_build(build_id).state is ports.BuildState.RUNNING


def test_the_run_builds_the_release_dockerfile_with_its_image_name_timeout_and_platform(fake):
    acr = builder(fake, timeout_seconds=1200)

    _, build_request = begin(fake, acr)

    sent = fake.last_run().request
    assert sent["type"] == "DockerBuildRequest"
    assert sent["dockerFilePath"] == DOCKERFILE == "model_api/Dockerfile"
    assert sent["imageNames"] == [f"shipbot/app:{build_request.tag}"]  # ACR pushes to its own login server
    assert (sent["isPushEnabled"], sent["timeout"]) == (True, 1200)
    assert sent["platform"] == {"os": "Linux", "architecture": "amd64"}
    args = {a["name"]: a["value"] for a in sent["arguments"]}
    assert args["RELEASE_ID"] == build_request.release_id and args["GIT_COMMIT"] == build_request.commit
    assert args["MODEL_SHA256"] == build_request.model.sha256 and args["MODEL_RUNTIMES"] == "sklearn"


def test_the_uploaded_context_and_the_build_args_are_the_docker_builders(fake, tmp_path):
    """Same tar (gzipped for ACR), same Dockerfile, same args, for the same inputs: DockerBuilder runs on a
    recording stand-in for the Docker client."""
    acr = builder(fake, base_image="python:3.11-slim")
    _, build_request = begin(fake, acr)
    sent = fake.last_run().request
    uploaded = gzip.decompress(fake.source_bytes(sent["sourceLocation"]))
    acr_args = {a["name"]: a["value"] for a in sent["arguments"]}

    recorder = _RecordingDocker()
    tree, model_dir = tmp_path / "source", tmp_path / "model"
    tree.mkdir()
    model_dir.mkdir()
    acr_inputs.TreeSource().archive(build_request.commit, tree)
    acr_inputs.BytesModels(acr_inputs.sample_files()).download(build_request.model, model_dir)
    docker_builder.DockerBuilder(client=recorder, base_image="python:3.11-slim").build(docker_builder.BuildRequest(
        source=tree, model_dir=model_dir, repository=build_request.repository, tag=build_request.tag,
        model_name=build_request.model.name, model_version=build_request.model.version,
        git_commit=build_request.commit, source_url=build_request.source_url, release_id=build_request.release_id),
        model_sha256=build_request.model.sha256)

    assert uploaded == recorder.context
    assert recorder.kwargs["dockerfile"] == sent["dockerFilePath"]
    volatile = {"BUILD_ID", "CREATED"}  # who built it and when: not part of the image's identity
    assert {k: v for k, v in acr_args.items() if k not in volatile} == \
        {k: v for k, v in recorder.kwargs["buildargs"].items() if k not in volatile}
    assert acr_args.keys() == recorder.kwargs["buildargs"].keys()


def test_the_recipe_names_acr_tasks_the_base_image_and_the_dockerfile(fake):
    assert builder(fake, base_image="mcr.example/python:3.11").recipe == "acr-tasks:mcr.example/python:3.11:" + DOCKERFILE


def test_a_succeeded_run_reports_the_digest_of_its_output_image_and_its_times(fake):
    fake.outcome = arm_acr.succeed("sha256:" + "ab" * 32)
    acr = builder(fake)
    build_id, _ = begin(fake, acr)

    build = settle(acr, build_id)

    assert (build.state, build.digest) == (ports.BuildState.SUCCEEDED, "sha256:" + "ab" * 32)
    assert [name for name, _ in build.steps] == ["queue", "build"]


def test_a_failed_run_is_failed_with_acrs_error_the_log_tail_and_a_log_url_without_its_sas(fake):
    fake.outcome = arm_acr.fail(log="Step 5/23 : RUN pip install\nERROR: No matching distribution for numpy==99\n")
    acr = builder(fake)
    build_id, _ = begin(fake, acr)

    build = settle(acr, build_id)

    assert build.state is ports.BuildState.FAILED and build.digest is None
    assert "failed during run, err: exit status 1" in build.error
    assert "No matching distribution for numpy==99" in build.error
    assert f"az acr task logs --registry {arm_acr.REGISTRY} --run-id {build_id}" in build.error
    assert build.log_url == f"{arm_acr.AZURITE_BLOB}/{arm_acr.LOGS}/{fake.log_blob(build_id)}"
    assert "sig=" not in build.log_url + build.error and "?" not in build.log_url


def test_a_run_that_acr_timed_out_is_failed_with_the_timeout(fake):
    fake.outcome = arm_acr.time_out(log="Step 7/23 : RUN pip install\n")
    acr = builder(fake, timeout_seconds=600)
    build_id, _ = begin(fake, acr)

    build = settle(acr, build_id)

    assert build.state is ports.BuildState.FAILED
    assert build.error.startswith(f"run {build_id} timed out after 600 s")


def test_a_run_that_never_finishes_is_running_until_its_time_is_up_then_failed_and_cancelled(fake):
    fake.outcome = arm_acr.never_finish()
    now = [dt.datetime.now(dt.UTC)]
    acr = builder(fake, timeout_seconds=600, queue_seconds=300, clock=lambda: now[0])
    build_id, _ = begin(fake, acr)

    now[0] += dt.timedelta(seconds=890)
    assert acr.get_build(build_id).state is ports.BuildState.RUNNING
    now[0] += dt.timedelta(seconds=20)
    build = acr.get_build(build_id)

    assert build.state is ports.BuildState.FAILED
    assert f"run {build_id} was still Running 900 s after it was queued (cancelled)" in build.error
    assert fake.run(build_id).status == acr_runs.CANCELED


def test_a_run_id_acr_never_gave_is_unknown(fake):
    assert builder(fake).get_build("cf999").state is ports.BuildState.UNKNOWN


def test_a_model_file_that_is_not_the_releases_is_rejected_without_a_run(fake):
    acr = builder(fake)

    build_id, _ = begin(fake, acr, model=acr_inputs.BytesModels(acr_inputs.sample_files(b"another model")).model())

    build = acr.get_build(build_id)
    assert build.state is ports.BuildState.FAILED and "the release expects" in build.error
    assert not fake.runs and not any(path.endswith("/scheduleRun") for _, path, _ in fake.requests)


def test_a_commit_the_source_does_not_have_is_rejected_and_an_unreachable_source_is_transient(fake):
    class Source:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def archive(self, sha, destination):
            raise self.error

    acr, models = builder(fake), acr_inputs.BytesModels(acr_inputs.sample_files())
    build_id = acr.begin_build(request(fake, models), Source(errors.NotFound("no commit cccc")), models)

    assert acr.get_build(build_id).error == "no commit cccc"
    with pytest.raises(errors.TransientError):
        acr.begin_build(request(fake, models), Source(errors.TransientError("git host down")), models)
    assert not fake.runs


def test_a_repository_in_another_registry_is_rejected(fake):
    acr = builder(fake)

    build_id, _ = begin(fake, acr, repository="other.azurecr.io/shipbot/app")

    assert acr.get_build(build_id).error == f"repository other.azurecr.io/shipbot/app is not in registry {fake.login_server}"


def test_the_context_is_streamed_so_memory_does_not_grow_with_the_model(fake, tmp_path):
    model = tmp_path / "model.joblib"
    with model.open("wb") as f:
        for _ in range(32):
            f.write(os.urandom(1 << 20))
    files = {**acr_inputs.sample_files(), "model.joblib": model}
    models = acr_inputs.BytesModels(files)
    acr = builder(fake)
    build_request = request(fake, models)
    fake.outcome = arm_acr.never_finish()  # the fake's own default outcome reads the context whole

    tracemalloc.start()
    try:
        acr.begin_build(build_request, acr_inputs.TreeSource(), models)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    uploaded = fake.source_blob(fake.last_run().request["sourceLocation"]).get_blob_properties().size
    assert uploaded > 32 << 20  # random bytes do not compress: all of it went up
    assert peak < 16 << 20, f"begin_build held {peak / 2**20:.1f} MiB for a 32 MiB model"


def test_arm_is_called_over_https_with_the_credentials_bearer_token_for_arms_scope(fake):
    begin(fake, builder(fake))

    assert fake.url.startswith("https://")
    assert ("https://management.azure.com/.default",) in fake.credential.scopes
    assert [path.rsplit("/", 1)[-1] for _, path, _ in fake.requests] == ["listBuildSourceUploadUrl", "scheduleRun"]


def test_a_token_arm_refuses_is_a_permanent_error(fake):
    acr = AcrTasksBuilder(client=acr_runs.tasks_client(arm_acr.StaticToken("not-the-token"), arm_acr.SUBSCRIPTION,
                                                       endpoint=fake.url, connection_verify=str(fake.ca_file)),
                          resource_group=arm_acr.RESOURCE_GROUP, registry_name=arm_acr.REGISTRY,
                          login_server=fake.login_server)

    with pytest.raises(errors.PermanentError, match="401"):
        begin(fake, acr)


def test_arm_answering_503_is_a_transient_error(fake):
    fake.refuse.append((503, "ServiceUnavailable"))

    with pytest.raises(errors.TransientError, match="503.*ServiceUnavailable"):
        begin(fake, builder(fake))


def test_an_upload_storage_refuses_is_transient_and_its_message_holds_no_sas(fake):
    fake.spoil_upload_sas = True

    with pytest.raises(errors.TransientError) as caught:
        begin(fake, builder(fake))

    assert "403" in str(caught.value)
    assert "sig=" not in str(caught.value) and "http" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not fake.runs


class _RecordingDocker:
    """Stands in for docker.DockerClient in DockerBuilder.build: records the context and the build kwargs."""

    def __init__(self) -> None:
        self.kwargs: dict = {}
        self.context = b""
        self.images = types.SimpleNamespace(build=self._build)
        self.api = types.SimpleNamespace(push=self._push)

    def _build(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.context = kwargs["fileobj"].read()

    def _push(self, repository, **kwargs):
        yield {"aux": {"Digest": "sha256:" + "0" * 64}}


def test_the_context_tar_holds_the_model_api_tree_and_the_model_folder(fake):
    begin(fake, builder(fake))

    data = gzip.decompress(fake.source_bytes(fake.last_run().request["sourceLocation"]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert DOCKERFILE in names and "model/model.joblib" in names and "model/sample-request.json" in names


# -- an app with its own Dockerfile: the same plan as DockerBuilder's, built by a multi-step task -----------------
APP = {"Dockerfile": "FROM python:3.11-slim AS base\nCOPY model/ /srv/model/\nFROM base AS serve\nEXPOSE 8080\n",
       "shipbot.toml": '[build]\ntarget = "serve"\n[smoke]\nidentity_path = "/about"\nexpect_keys = ["y"]\n',
       "app.py": "print('serving')\n"}
SAMPLE = b'{"x": "{{.Run.ID}}", "price": "$ID $$5"}'  # what ACR's rendering of the task must leave as it is


def begin_app(fake: arm_acr.FakeAcr, acr: AcrTasksBuilder, files: dict[str, str]) -> tuple[str, ports.BuildRequest]:
    models = acr_inputs.BytesModels({**acr_inputs.sample_files(), "sample-request.json": SAMPLE})
    build_request = request(fake, models)
    return acr.begin_build(build_request, acr_inputs.FilesSource(files), models), build_request


def build_words(run: arm_acr.FakeRun) -> tuple[list[str], list]:
    steps = run.task["steps"]
    assert [step["id"] for step in steps] == ["build", "push"]
    return shlex.split(steps[0]["build"]), steps[1]["push"]  # run.task renders the file as ACR's agent does


def test_an_own_image_is_built_by_a_build_and_a_push_step_with_shipbots_args_and_labels(fake):
    acr = builder(fake, timeout_seconds=900)
    _, build_request = begin_app(fake, acr, APP)
    run = fake.last_run()

    assert run.kind == "EncodedTaskRunRequest" and run.request["timeout"] == 900
    words, push = build_words(run)
    image = f"{build_request.repository}:{build_request.tag}"
    assert words[:6] == ["-t", image, "-f", "Dockerfile", "--target", "serve"] and words[-1] == "."
    assert push == [image]
    assert set(words[6:-1:2]) == {"--build-arg", "--label"}
    args = dict(v.split("=", 1) for k, v in zip(words[6:-1:2], words[7:-1:2]) if k == "--build-arg")
    labels = dict(v.split("=", 1) for k, v in zip(words[6:-1:2], words[7:-1:2]) if k == "--label")
    assert args == {"SHIPBOT_RELEASE_ID": build_request.release_id, "SHIPBOT_GIT_COMMIT": build_request.commit,
                    "SHIPBOT_MODEL_NAME": "diabetes", "SHIPBOT_MODEL_VERSION": "1",
                    "SHIPBOT_MODEL_SHA256": build_request.model.sha256}
    assert labels["dev.shipbot.release.id"] == build_request.release_id
    smoke = contract.Contract.of_labels(labels)
    assert (smoke.port, smoke.identity_path, smoke.expect_keys) == (8080, "/about", ("y",))
    assert smoke.request == {"x": "{{.Run.ID}}", "price": "$ID $$5"}  # ACR's rendering leaves the sample be


def test_an_own_images_context_and_labels_are_the_docker_builders(fake, tmp_path):
    _, build_request = begin_app(fake, builder(fake), APP)
    run = fake.last_run()
    words, _ = build_words(run)
    acr_labels = dict(v.split("=", 1) for k, v in zip(words[6:-1:2], words[7:-1:2]) if k == "--label")

    recorder = _RecordingDocker()
    tree, model_dir = tmp_path / "source", tmp_path / "model"
    tree.mkdir()
    model_dir.mkdir()
    acr_inputs.FilesSource(APP).archive(build_request.commit, tree)
    acr_inputs.BytesModels({**acr_inputs.sample_files(), "sample-request.json": SAMPLE}).download(
        build_request.model, model_dir)
    docker_builder.DockerBuilder(client=recorder).build(docker_builder.BuildRequest(
        source=tree, model_dir=model_dir, repository=build_request.repository, tag=build_request.tag,
        model_name="diabetes", model_version="1", git_commit=build_request.commit,
        source_url=build_request.source_url, release_id=build_request.release_id),
        model_sha256=build_request.model.sha256)

    assert gzip.decompress(fake.source_bytes(run.request["sourceLocation"])) == recorder.context
    assert recorder.kwargs["target"] == "serve"
    volatile = {"org.opencontainers.image.created", "dev.shipbot.build.id"}
    assert {k: v for k, v in acr_labels.items() if k not in volatile} == \
        {k: v for k, v in recorder.kwargs["labels"].items() if k not in volatile}


def test_a_bad_manifest_is_rejected_with_file_key_and_line_and_nothing_is_scheduled(fake):
    acr = builder(fake)
    build_id, _ = begin_app(fake, acr, {**APP, "shipbot.toml": '[build]\ntarget = "serve"\ncolour = "red"\n'})

    assert build_id.startswith("rejected-") and fake.runs == {}
    build = acr.get_build(build_id)
    assert build.state is ports.BuildState.FAILED
    assert build.error == "shipbot.toml, [build] colour (line 3): unknown key"
