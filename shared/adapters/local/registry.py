"""DistributionRegistry: the local distribution registry (ports.Registry); ACR stands here in Azure.

It talks through azure-containerregistry's ContainerRegistryClient, anonymously, over plain HTTP on
127.0.0.1. Only the OCI distribution calls work against a distribution registry (its /acr/v1 calls are
ACR's own), so an image is read the way `docker pull` reads it: the manifest by tag or digest (an index
resolves to its linux/amd64 entry), then the config blob, whose `config.Labels` are the image labels. The
digest reported is the one that was asked for or that the tag points at: what environments deploy.

`repository` excludes the host ("shipbot/app"); the Image names the full repository ("127.0.0.1:5000/shipbot/app").
Errors: a missing repository, tag or digest is NotFound; a registry that does not answer is a TransientError.
"""

from __future__ import annotations

import json
import re

from azure.containerregistry import ContainerRegistryClient, DigestValidationError
from azure.core import exceptions as azure_errors

from shared import errors, ports

# The distribution spec's grammar for repository names and references.
REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MAX_CONFIG_BYTES = 4 << 20
PLATFORM = {"os": "linux", "architecture": "amd64"}


class DistributionRegistry:
    def __init__(self, *, host: str = "127.0.0.1:5000", scheme: str = "http",
                 client: ContainerRegistryClient | None = None) -> None:
        """`scheme` is http for the local registry; a client may be passed (tests, or a shared one)."""
        self.host = host
        self._https = scheme == "https"
        self._client = client or ContainerRegistryClient(f"{scheme}://{host}", None, retry_total=2)

    def get_image(self, repository: str, reference: str) -> ports.Image:
        repository = repository.removeprefix(f"{self.host}/")
        if not REPOSITORY.fullmatch(repository) or not (TAG.fullmatch(reference) or DIGEST.fullmatch(reference)):
            raise errors.NotFound(f"no image {repository}:{reference}: not a valid repository name or reference")
        name = f"{repository}@{reference}" if DIGEST.fullmatch(reference) else f"{repository}:{reference}"
        manifest = self._call(self._client.get_manifest, repository, reference, what=name)
        digest, body = manifest.digest, manifest.manifest
        if manifest.media_type in INDEX_TYPES or body.get("mediaType") in INDEX_TYPES:
            body = self._platform_manifest(repository, name, body)
        config = body.get("config") or {}
        if not DIGEST.fullmatch(str(config.get("digest", ""))):
            raise errors.NotFound(f"{name} is not a container image (no config blob)")
        if int(config.get("size", 0)) > MAX_CONFIG_BYTES:
            raise errors.NotFound(f"{name} has an oversized config blob")
        stream = self._call(self._client.download_blob, repository, config["digest"], what=f"config of {name}")
        try:
            document = json.loads(b"".join(stream))
        except (ValueError, azure_errors.AzureError) as e:
            raise errors.TransientError(f"the config of {name} did not download: {type(e).__name__}") from None
        labels = (document.get("config") or {}).get("Labels") or {}
        return ports.Image(repository=f"{self.host}/{repository}", digest=digest,
                           labels={str(k): str(v) for k, v in labels.items()})

    def close(self) -> None:
        self._client.close()

    def _platform_manifest(self, repository: str, name: str, index: dict) -> dict:
        entries = index.get("manifests") or []
        chosen = next((m for m in entries if all((m.get("platform") or {}).get(k) == v for k, v in PLATFORM.items())),
                      None)
        if chosen is None:
            raise errors.NotFound(f"{name} has no {PLATFORM['os']}/{PLATFORM['architecture']} image")
        return self._call(self._client.get_manifest, repository, chosen["digest"],
                          what=f"{repository}@{chosen['digest']}").manifest

    def _call(self, method, repository: str, reference: str, *, what: str):
        try:
            # The SDK refuses plain HTTP unless told, per call: the local registry is plain HTTP on loopback.
            return method(repository, reference, enforce_https=self._https)
        except azure_errors.ResourceNotFoundError:
            raise errors.NotFound(f"no image {what} in {self.host}") from None
        except azure_errors.ClientAuthenticationError:
            raise errors.NotFound(f"no image {what} in {self.host} (access denied)") from None
        except DigestValidationError:
            raise errors.TransientError(f"{what} did not match its digest (a corrupt transfer?)") from None
        except (azure_errors.AzureError, ValueError) as e:
            raise errors.TransientError(f"registry {self.host} did not answer for {what}: "
                                        f"{type(e).__name__}") from None
