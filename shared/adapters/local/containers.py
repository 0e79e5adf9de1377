"""Running a release image as a container on the local Docker engine, and waiting for it to be ready.

Environments and smoke tests are containers here (Deployments on AKS in Azure). A container publishes its
app's port on 127.0.0.1 only. The helpers below are what DockerSmokeRunner and DockerDeployer share:
create a container, find its port, read a file out of it, wait until it is ready, check its identity.

Which port, which paths: the image's smoke contract, the label `dev.shipbot.contract` that the builder writes
from shipbot.toml's [smoke] (an own-image app); an image without it (model_api, a foreign image) gets
model_api's contract: port 5001, /readyz, /version, the sample files in its model folder.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable

import docker
import docker.errors
import httpx
import requests
import tenacity
from docker.models.containers import Container

from shared import contract, ports

MODEL_API_PORT = contract.MODEL_API_PORT


def contract_of(container: Container) -> contract.Contract:
    """The smoke contract of the image a container runs (its labels carry it)."""
    return contract.Contract.of_labels(container.attrs.get("Config", {}).get("Labels"))


class NotReady(Exception):
    pass


def run_model_api(client: docker.DockerClient, image_ref: str, *, name: str, host_port: int,
                  labels: dict[str, str] | None = None, environment: dict[str, str] | None = None) -> Container:
    """Start image_ref as `name` (replacing a container of that name) with its port on 127.0.0.1:host_port."""
    remove(client, name)
    return client.containers.run(image_ref, name=name, detach=True, labels=labels or {},
                                 environment=environment or {},
                                 ports={f"{MODEL_API_PORT}/tcp": ("127.0.0.1", host_port)})


def remove(client: docker.DockerClient, name: str) -> None:
    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


def wait_ready(base_url: str, *, timeout_s: float, container: Container | None = None) -> None:
    """Poll GET /readyz until 200. Gives up after timeout_s, or at once if the container has exited."""

    def probe() -> None:
        if container is not None:
            container.reload()
            if container.status in ("exited", "dead"):
                raise RuntimeError(f"container {container.name} exited: {container.logs(tail=20).decode()}")
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=2)
        except httpx.TransportError as e:
            raise NotReady(str(e)) from None
        if response.status_code != 200:
            raise NotReady(response.text)

    retrying = tenacity.Retrying(stop=tenacity.stop_after_delay(timeout_s), wait=tenacity.wait_fixed(0.2),
                                 retry=tenacity.retry_if_exception_type(NotReady), reraise=True)
    retrying(probe)


# -- what the smoke runner and the deployer share ------------------------------------------------------------
# Each helper answers with a reason (empty when all is well) rather than raising: a red smoke test or a failed
# rollout is an outcome the engine records, not an error. Docker engine errors still raise; ENGINE_ERRORS are
# what the Docker SDK raises when the engine fails or does not answer at all.
ENGINE_ERRORS = (docker.errors.APIError, docker.errors.DockerException, requests.RequestException)
LOG_LINES = 15
POLL_SECONDS = 0.2


def create_model_api(client: docker.DockerClient, image_ref: str, *, name: str, host_port: int | None,
                     labels: dict[str, str] | None = None, environment: dict[str, str] | None = None,
                     restart: bool = False) -> Container:
    """Create (not start) image_ref as `name`, replacing a container of that name, pulling the image if the
    engine lacks it (docker.errors.NotFound when the registry lacks it too). host_port None lets the engine
    pick a free port on 127.0.0.1 (read it with `host_port` once started): no race with other users."""
    remove(client, name)
    try:
        image = client.images.get(image_ref)
    except docker.errors.ImageNotFound:
        image = client.images.pull(image_ref)  # by digest: what was tested is what runs
    port = contract.Contract.of_labels(image.labels).port
    published = {f"{port}/tcp": ("127.0.0.1", host_port) if host_port else ("127.0.0.1",)}
    options = {"name": name, "detach": True, "labels": labels or {}, "environment": environment or {},
               "ports": published, "restart_policy": {"Name": "unless-stopped"} if restart else None}
    return client.containers.create(image_ref, **options)


def start(container: Container) -> str:
    """Start a created container. A start the engine refuses (the image's command does not exist, the port is
    taken) is a reason; an engine that does not answer at all raises."""
    try:
        container.start()
    except docker.errors.APIError as e:
        return f"the container did not start: {short(str(e.explanation))}"
    return ""


def host_port(container: Container) -> int:
    container.reload()
    port = contract_of(container).port
    bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []
    for binding in bindings:
        if binding.get("HostIp") in ("127.0.0.1", "0.0.0.0", "") and binding.get("HostPort"):
            return int(binding["HostPort"])
    raise RuntimeError(f"container {container.name} publishes no port for {port}/tcp")


def log_tail(container: Container, lines: int = LOG_LINES) -> str:
    try:
        return container.logs(tail=lines).decode("utf-8", "replace").strip()
    except docker.errors.APIError:
        return "(logs unavailable)"


def read_file(container: Container, path: str, *, max_bytes: int = 10 << 20) -> bytes:
    """One file out of a container's filesystem (created, running or stopped) through the engine's archive
    API: no exec, so it works on images without a shell. FileNotFoundError when absent."""
    try:
        chunks, stat = container.get_archive(path)
    except docker.errors.NotFound:
        raise FileNotFoundError(path) from None
    if stat.get("size", 0) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes} bytes")
    buffer = io.BytesIO()
    for chunk in chunks:  # a tar of the one file, slightly larger than it
        buffer.write(chunk)
        if buffer.tell() > max_bytes + (1 << 20):
            raise ValueError(f"{path} is larger than {max_bytes} bytes")
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        member = next((m for m in tar if m.isfile()), None)
        if member is None:
            raise FileNotFoundError(path)
        return tar.extractfile(member).read()  # type: ignore[union-attr]


def await_ready(container: Container, base_url: str, *, deadline: float, budget_seconds: float,
                clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> str:
    """Poll the contract's readiness path (model_api's /readyz) until 200 or `deadline` (a `clock` reading).
    Gives up at once when the container exits or model_api reports that its model failed to load (that state
    is final). Returns a reason, or ""."""
    path = contract_of(container).ready_path
    last = "no answer"
    with httpx.Client(timeout=2) as http:
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                return (f"the container exited (code {code}) before {path} answered 200; last log lines:\n"
                        f"{log_tail(container)}")
            try:
                response = http.get(f"{base_url}{path}")
            except httpx.TransportError:
                pass
            else:
                if response.status_code == 200:
                    return ""
                last = f"{response.status_code} {short(response.text)}"
                state = _json(response).get("status")
                if state == "failed":
                    return f"{path} reports the model failed to load: {short(str(_json(response).get('error')))}"
            if clock() >= deadline:
                return f"{path} did not answer 200 within {budget_seconds:g} s (last answer: {last})"
            sleep(POLL_SECONDS)


def check_version(base_url: str, expected: ports.Expectation, *, timeout: float, path: str | None = "/version",
                  loose: bool = False) -> str:
    """GET the identity path (model_api's /version) and compare it with `expected`. Returns a reason naming the
    first mismatch, or "". No path (an app without an identity route): "", the digest that runs identifies it."""
    if path is None:
        return ""
    try:
        response = httpx.get(f"{base_url}{path}", timeout=max(timeout, 0.1))
    except httpx.HTTPError as e:
        return f"{path} did not answer: {type(e).__name__}"
    if response.status_code != 200:
        return f"{path} answered {response.status_code}: {short(response.text)}"
    return contract.identity_mismatch(_json(response), expected, path=path, loose=loose)


def short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json(response: httpx.Response) -> dict:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
