"""AcrRegistry: ports.Registry on Azure Container Registry, or on any OCI distribution registry, plus `promote`:
putting an image under a tag in another repository (or bringing it from another registry) with its digest kept.

It speaks the OCI distribution API through azure-containerregistry's ContainerRegistryClient. With a
TokenCredential (ACR) the SDK's challenge policy trades the Entra ID token for ACR refresh and access tokens
(POST /oauth2/exchange, /oauth2/token); with none it is anonymous, which is how the local distribution
registry is read (plain HTTP on loopback: `scheme="http"` turns the SDK's https-only check off per call).
Only OCI calls are used, never ACR's /acr/v1 ones, so both kinds of registry behave the same.

get_image reads what `docker pull` reads: the manifest by tag or digest (an index resolves to its linux/amd64
entry), then the config blob, whose `config.Labels` are the image labels. The digest reported is the one asked
for or that the tag points at: what environments deploy. `repository` may include the host or not; the Image
names it with the host ("<host>/shipbot/app").

promote(source_repository, digest, target_repository=, tag=) either way leaves `target:tag` pointing at
`digest`, and checks that on the target afterwards:
  import  when an importer is given (shared/adapters/azure/acr_import.py): ACR copies server side, by ARM.
  copy    otherwise: the manifest is read as raw bytes and written back unchanged (re-serialising the JSON
          would change the digest), after every blob it names (an index: every child manifest first). A
          blob the target has is skipped; within one registry it is mounted from the source repository
          (no bytes move); across registries it is streamed through a spool file, never whole in memory.
It is idempotent (a tag already on the digest is success, nothing moves) and never moves a tag that points
at another digest unless `force=True` (errors.Refused).

Errors: a missing repository, tag or digest is NotFound; access denied with a credential is a PermanentError
(the identity lacks AcrPull/AcrPush), anonymous it is NotFound (registries hide what one may not see); a
registry that does not answer, or a transfer that does not match its digest, is a TransientError.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Iterator
from typing import Any, Protocol

from azure.containerregistry import ContainerRegistryClient, DigestValidationError
from azure.core import exceptions as azure_errors
from azure.core.credentials import TokenCredential

from shared import errors, ports

# The distribution spec's grammar for repository names and references.
REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
IMAGE_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
MAX_CONFIG_BYTES = 4 << 20
PLATFORM = {"os": "linux", "architecture": "amd64"}
ACR_AUDIENCE = "https://containerregistry.azure.net"  # public cloud; sovereign clouds have their own
SPOOL_BYTES = 16 << 20  # a copied blob up to this size stays in memory, a larger one goes to a temporary file


class Importer(Protocol):
    """Server-side import into this registry (ArmImageImport). `source_host` None: this registry itself."""

    def import_image(self, *, source_host: str | None, source_repository: str, digest: str,
                     target_repository: str, tag: str, force: bool) -> None: ...


class AcrRegistry:
    def __init__(self, *, host: str, credential: TokenCredential | None = None, scheme: str = "https",
                 audience: str = ACR_AUDIENCE, importer: Importer | None = None,
                 client: ContainerRegistryClient | None = None, **client_options: Any) -> None:
        """`host` is the login server ("<name>.azurecr.io", "127.0.0.1:5000"). `credential` None is anonymous.
        `scheme` http only for a local registry. `importer` makes promote import by ARM instead of copying.
        `client_options` go to every ContainerRegistryClient made here (retry_total=..., connection_verify=...);
        `client` replaces the one for `host` (tests, or a shared one)."""
        if scheme not in ("http", "https"):
            raise ValueError("scheme must be http or https")
        self.host = host
        self._credential = credential
        self._scheme = scheme
        self._audience = audience
        self._importer = importer
        self._options = {"retry_total": 3, **client_options}
        self._client = client or self._new_client(host)
        self._peers: dict[str, AcrRegistry] = {}
        # The SDK refuses plain HTTP unless told, per call: the local registry is plain HTTP on loopback.
        self._kw = {"enforce_https": scheme == "https"}

    # -- ports.Registry ---------------------------------------------------------------------------------------
    def get_image(self, repository: str, reference: str) -> ports.Image:
        repository = self._path(repository)
        if not TAG.fullmatch(reference) and not DIGEST.fullmatch(reference):
            raise errors.NotFound(f"no image {repository}:{reference}: not a valid repository name or reference")
        name = _name(repository, reference)
        with self._boundary(name):
            manifest = self._client.get_manifest(repository, reference, **self._kw)
        digest, body = manifest.digest, manifest.manifest
        if _media_type(manifest.media_type, body) in INDEX_TYPES:
            body = self._platform_manifest(repository, name, body)
        config = body.get("config") or {}
        if not DIGEST.fullmatch(str(config.get("digest", ""))):
            raise errors.NotFound(f"{name} is not a container image (no config blob)")
        if int(config.get("size", 0)) > MAX_CONFIG_BYTES:
            raise errors.NotFound(f"{name} has an oversized config blob")
        with self._boundary(f"config of {name}"):
            document = json.loads(b"".join(self._client.download_blob(repository, config["digest"], **self._kw)))
        labels = (document.get("config") or {}).get("Labels") or {}
        return ports.Image(repository=f"{self.host}/{repository}", digest=digest,
                           labels={str(k): str(v) for k, v in labels.items()})

    # -- promotion --------------------------------------------------------------------------------------------
    def promote(self, source_repository: str, digest: str, *, target_repository: str, tag: str,
                source_host: str | None = None, force: bool = False) -> str:
        """Makes `target_repository:tag` here point at `source_repository@digest` (from `source_host`, default
        this registry) and returns the digest; see the module docstring."""
        source_host = source_host or self.host
        source = self if source_host == self.host else self._peer(source_host)
        source_repository, target_repository = source._path(source_repository), self._path(target_repository)
        if not DIGEST.fullmatch(digest):
            raise errors.NotFound(f"no image {source_repository}@{digest}: promotion takes a sha256 digest")
        if not TAG.fullmatch(tag):
            raise errors.PermanentError(f"{tag!r} is not a valid tag")
        target = f"{self.host}/{target_repository}:{tag}"
        current = self._tagged(target_repository, tag)
        if current == digest:
            return digest
        if current and not force:
            raise errors.Refused(f"{target} points at {current}, not {digest}; promote with force to move it")
        if self._importer is not None:
            self._importer.import_image(source_host=None if source is self else source_host,
                                        source_repository=source_repository, digest=digest,
                                        target_repository=target_repository, tag=tag, force=force)
        else:
            self._copy_manifest(source, source_repository, digest, target_repository, tag=tag)
        landed = self._tagged(target_repository, tag)
        if landed != digest:
            raise errors.TransientError(f"{target} points at {landed or 'nothing'} after promoting {digest}")
        return digest

    def close(self) -> None:
        for peer in self._peers.values():
            peer.close()
        self._client.close()

    # -- internals --------------------------------------------------------------------------------------------
    def _new_client(self, host: str) -> ContainerRegistryClient:
        return ContainerRegistryClient(f"{self._scheme}://{host}", self._credential, audience=self._audience,
                                       **self._options)

    def _peer(self, host: str) -> AcrRegistry:
        """Another registry, reached with this one's credential, scheme and options."""
        if host not in self._peers:
            self._peers[host] = AcrRegistry(host=host, credential=self._credential, scheme=self._scheme,
                                            audience=self._audience, **self._options)
        return self._peers[host]

    def _path(self, repository: str) -> str:
        path = repository.removeprefix(f"{self.host}/")
        if not REPOSITORY.fullmatch(path):
            raise errors.NotFound(f"no repository {path!r}: not a valid repository name")
        return path

    def _platform_manifest(self, repository: str, name: str, index: dict) -> dict:
        entries = index.get("manifests") or []
        chosen = next((m for m in entries if all((m.get("platform") or {}).get(k) == v for k, v in PLATFORM.items())),
                      None)
        if chosen is None or not DIGEST.fullmatch(str(chosen.get("digest", ""))):
            raise errors.NotFound(f"{name} has no {PLATFORM['os']}/{PLATFORM['architecture']} image")
        with self._boundary(f"{repository}@{chosen['digest']}"):
            return self._client.get_manifest(repository, chosen["digest"], **self._kw).manifest

    def _tagged(self, repository: str, tag: str) -> str | None:
        """The digest `repository:tag` points at here, None when the tag or repository does not exist."""
        try:
            with self._boundary(f"{repository}:{tag}"):
                return self._client.get_manifest(repository, tag, **self._kw).digest
        except errors.NotFound:
            return None

    def _raw_manifest(self, repository: str, digest: str) -> tuple[bytes, str, dict]:
        """The manifest's bytes exactly as stored (get_manifest keeps only the parsed JSON; the response hook
        sees the bytes), its media type and its parsed body."""
        responses: list = []
        with self._boundary(f"{repository}@{digest}"):
            result = self._client.get_manifest(repository, digest, raw_response_hook=responses.append, **self._kw)
        raw = responses[-1].http_response.body() if responses else b""
        if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:  # the SDK checked its own read; so do we
            raise errors.TransientError(f"{repository}@{digest} did not read back as its digest")
        return raw, result.media_type.split(";")[0].strip(), result.manifest

    def _copy_manifest(self, source: AcrRegistry, repository: str, digest: str, target: str, *,
                       tag: str | None, depth: int = 0) -> None:
        raw, media_type, body = source._raw_manifest(repository, digest)
        kind = _media_type(media_type, body)
        if kind in INDEX_TYPES and depth == 0:
            for entry in body.get("manifests") or []:
                if not DIGEST.fullmatch(str(entry.get("digest", ""))):
                    raise errors.PermanentError(f"{repository}@{digest} lists a manifest without a sha256 digest")
                self._copy_manifest(source, repository, entry["digest"], target, tag=None, depth=1)
        elif kind in IMAGE_TYPES:
            for blob in (body.get("config") or {}, *(body.get("layers") or [])):
                if blob.get("urls"):
                    continue  # a foreign layer lives at its URLs, not in the registry
                if not DIGEST.fullmatch(str(blob.get("digest", ""))):
                    raise errors.PermanentError(f"{repository}@{digest} names a blob without a sha256 digest")
                self._copy_blob(source, repository, blob["digest"], target)
        else:
            raise errors.PermanentError(f"{repository}@{digest} is a {media_type or 'untyped'} manifest, "
                                        "which promotion does not copy")
        # Pushed by digest (children) or by tag; the bytes are the source's, so the digest is too.
        with self._boundary(f"{self.host}/{target}@{digest}"):
            pushed = self._client.set_manifest(target, io.BytesIO(raw), tag=tag, media_type=media_type, **self._kw)
        if pushed != digest:
            raise errors.TransientError(f"{self.host}/{target} stored {pushed}, not {digest}")

    def _copy_blob(self, source: AcrRegistry, repository: str, digest: str, target: str) -> None:
        what = f"blob {digest[:19]} for {self.host}/{target}"
        if self._has_blob(target, digest) or (source is self and self._mount(target, repository, digest)):
            return
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            with source._boundary(f"{source.host}/{repository}@{digest}"):
                for chunk in source._client.download_blob(repository, digest, **source._kw):
                    spool.write(chunk)  # the stream checks the digest after its last chunk
            spool.seek(0)
            with self._boundary(what):
                uploaded, _ = self._client.upload_blob(target, spool, **self._kw)
        if uploaded != digest:
            raise errors.TransientError(f"{what} was stored as {uploaded}")

    def _has_blob(self, repository: str, digest: str) -> bool:
        """HEAD the blob. Not in ContainerRegistryClient's surface, so through its generated operations; an
        SDK without them, or any answer but 200/404, means "copy it", which is always correct."""
        operations = _blob_operations(self._client)
        if operations is None:
            return False
        try:
            with self._boundary(f"blob {digest[:19]} in {self.host}/{repository}"):
                operations.check_blob_exists(repository, digest, **self._kw)
        except errors.NotFound:
            return False
        except errors.PermanentError:
            return False
        return True

    def _mount(self, target: str, source_repository: str, digest: str) -> bool:
        """Cross-repository mount within this registry: 201 mounted; a 202 (an upload opened instead, left to
        expire) or any refusal means "copy it"."""
        operations = _blob_operations(self._client)
        if operations is None:
            return False
        try:
            operations.mount_blob(target, from_parameter=source_repository, mount=digest, **self._kw)
        except azure_errors.HttpResponseError:
            return False
        return True

    @contextlib.contextmanager
    def _boundary(self, what: str) -> Iterator[None]:
        """SDK errors -> errors.*; messages name the image, never a token or URL query."""
        try:
            yield
        except azure_errors.ResourceNotFoundError:
            raise errors.NotFound(f"no image {what} in {self.host}") from None
        except azure_errors.ClientAuthenticationError as e:
            if self._credential is None:
                raise errors.NotFound(f"no image {what} in {self.host} (access denied)") from None
            if e.status_code in (401, 403):
                raise errors.PermanentError(f"access to {what} in {self.host} denied ({e.status_code}): does the "
                                            "identity have AcrPull (AcrPush to promote)?") from None
            raise errors.TransientError(f"no token for {self.host} ({type(e).__name__})") from None
        except azure_errors.HttpResponseError as e:
            if e.status_code == 403:
                raise errors.PermanentError(f"access to {what} in {self.host} denied (403)") from None
            if e.status_code and 400 <= e.status_code < 500 and e.status_code not in (408, 429):
                raise errors.PermanentError(f"registry {self.host} refused {what} ({e.status_code} "
                                            f"{e.reason})") from None
            raise errors.TransientError(f"registry {self.host} answered {e.status_code} for {what}") from None
        except DigestValidationError:
            raise errors.TransientError(f"{what} did not match its digest (a corrupt transfer?)") from None
        except (azure_errors.AzureError, ValueError) as e:
            # Connection errors quote the request URL: not chained.
            raise errors.TransientError(f"registry {self.host} did not answer for {what}: "
                                        f"{type(e).__name__}") from None


def _name(repository: str, reference: str) -> str:
    return f"{repository}@{reference}" if DIGEST.fullmatch(reference) else f"{repository}:{reference}"


def _media_type(header: str | None, body: dict) -> str:
    """The manifest's type: the Content-Type header, or the body's own mediaType when the header is generic."""
    header = (header or "").split(";")[0].strip()
    if header in INDEX_TYPES or header in IMAGE_TYPES:
        return header
    return str(body.get("mediaType") or header)


def _blob_operations(client: ContainerRegistryClient):
    """The generated client's blob operations (HEAD, mount) that ContainerRegistryClient does not expose; pinned
    SDK version (requirements.txt), and a missing attribute only costs a copy."""
    return getattr(getattr(client, "_client", None), "container_registry_blob", None)
