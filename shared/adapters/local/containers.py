"""Running a release image as a container on the local Docker engine, and waiting for it to be ready.

Environments and smoke tests are containers here (Deployments on AKS in Azure). A container publishes
model_api's port on 127.0.0.1 only.
"""

from __future__ import annotations

import docker
import docker.errors
import httpx
import tenacity
from docker.models.containers import Container

MODEL_API_PORT = 5001


class NotReady(Exception):
    pass


def run_model_api(client: docker.DockerClient, image_ref: str, *, name: str, host_port: int,
                  labels: dict[str, str] | None = None) -> Container:
    """Start image_ref as `name` (replacing a container of that name) with its port on 127.0.0.1:host_port."""
    remove(client, name)
    return client.containers.run(image_ref, name=name, detach=True, labels=labels or {},
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
