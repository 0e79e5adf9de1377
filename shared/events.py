"""Wire payloads -> domain events: the first step of every trigger.

A payload from Event Grid (its own schema or CloudEvents 1.0, detected by `specversion`) becomes a frozen fact
in the past tense (`ModelUploaded`, `ImagePushed`); `shared.webhooks` does the same for git webhooks
(`CommitPushed`, `Pinged`), reading them with this module's `Fields`; timer triggers build `PromotionDue` and
`ReconcileDue` themselves. A parse function returns that fact, or `Ignored(reason)` for a well-formed event
that is not for us (log it, acknowledge it, never retry it), or raises `errors.InvalidEvent` (log and drop:
HTTP 400). Events are hints and state is truth, so an event carries what identifies and orders a fact, not
everything its payload says.

Messages name fields, never values that could be secret: no signatures, no passwords, and URLs keep scheme,
host and path only (a SAS query string or user info is dropped, also from the events themselves).

Pure. No I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, NotRequired, TypedDict
from urllib.parse import urlsplit, urlunsplit

from shared import errors

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
MODEL_REGISTERED = "Microsoft.MachineLearningServices.ModelRegistered"
IMAGE_PUSHED = "Microsoft.ContainerRegistry.ImagePushed"
IMAGE_MEDIA_TYPES = frozenset({
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
})
# They travel with the model (model_api's sample request and response) but are not the model.
SIDECAR_FILES = frozenset({"sample-request.json", "sample-response.json"})

_BLOB_SUBJECT = re.compile(r"/blobServices/default/containers/([^/]+)/blobs/(.+)", re.DOTALL)
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
_MODEL_PATH = re.compile(rf"({_NAME})/({_NAME})/([A-Za-z0-9][A-Za-z0-9._-]{{0,127}})")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# An Azure ML model name (letters, digits, `-`, `_`, `.`; 255 at most) and version, as registries name them.
REGISTERED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_REGISTERED_VERSION = re.compile(r"[1-9][0-9]{0,9}")
_WORKSPACE = re.compile(r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.MachineLearningServices/"
                        r"workspaces/[^/]+", re.IGNORECASE)
# The OCI distribution spec's grammar (it also allows `__` and runs of `-`, which ACR accepts).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")
# cosign pushes signatures, attestations and SBOMs as OCI manifests tagged after the image's digest.
_COSIGN_TAG = re.compile(r"sha256-[0-9a-f]{64}\.(?:sig|att|sbom)")


class Unauthenticated(errors.InvalidEvent):
    """The webhook's signature or password is missing or wrong (HTTP 401, where InvalidEvent is 400)."""


class TooLarge(errors.InvalidEvent):
    """The body exceeds the limit; its message says "too large" (HTTP 413)."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed event that is not for ShipBot: log `reason` and acknowledge it (never retry it)."""

    reason: str


@dataclass(frozen=True, slots=True)
class ModelUploaded:
    """A model file landed at `<model_name>/<model_version>/<file>` in the models container."""

    event_id: str
    model_name: str
    model_version: str
    blob_name: str
    url: str  # scheme, host and path only
    content_length: int
    etag: str  # as Event Grid sends it (quoted, like the HTTP header)
    sequencer: str  # orders events on one blob: compare as strings of equal length
    event_time: datetime


@dataclass(frozen=True, slots=True)
class ModelRegistered:
    """A version of a model was registered in a model registry (an Azure ML workspace, or the local MLflow)."""

    event_id: str
    model_name: str
    model_version: str
    workspace: str  # the registry's ARM id (the event's topic or source)
    event_time: datetime


@dataclass(frozen=True, slots=True)
class ImagePushed:
    """A manifest was pushed; `reference` is what the smoke test and the rollouts run."""

    event_id: str
    registry: str  # host[:port] the client pushed to
    repository: str
    tag: str | None  # None when pushed by digest (e.g. each platform manifest of a multi-arch index)
    digest: str
    media_type: str
    event_time: datetime

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repository}@{self.digest}"


@dataclass(frozen=True, slots=True)
class CommitPushed:
    """`commit` became the head of the release branch `branch` of `repository`."""

    event_id: str
    source: str  # "github" | "azure-devops"
    repository: str
    branch: str
    commit: str
    clone_url: str  # scheme, host and path only
    pusher: str
    event_time: datetime


@dataclass(frozen=True, slots=True)
class Pinged:
    """GitHub checked that the webhook answers (sent once, when the hook is created)."""

    event_id: str
    zen: str


@dataclass(frozen=True, slots=True)
class PromotionDue:
    """The nightly timer fired: promote the newest green staging release."""

    fired_at: datetime


@dataclass(frozen=True, slots=True)
class ReconcileDue:
    """The reconcile timer fired: converge on the sources of truth, repairing what lost events left."""

    fired_at: datetime


Event = ModelUploaded | ModelRegistered | ImagePushed | CommitPushed | PromotionDue | ReconcileDue


class RawEventGridEvent(TypedDict):
    id: str
    topic: str
    subject: str
    eventType: str
    eventTime: str
    data: dict[str, Any]
    dataVersion: str
    metadataVersion: str


class RawCloudEvent(TypedDict):
    specversion: str  # "1.0"
    id: str
    source: str
    type: str
    time: str
    subject: str
    data: dict[str, Any]


class RawBlobCreatedData(TypedDict):
    api: str  # PutBlob | PutBlockList | CopyBlob | FlushWithClose | CreateFile (ADLS, always empty)
    eTag: str
    contentType: str
    contentLength: int
    blobType: str
    url: str
    sequencer: str


class RawRegistryTarget(TypedDict):
    mediaType: str
    size: int
    digest: str
    length: int
    repository: str
    tag: NotRequired[str]  # absent when pushed by digest
    url: NotRequired[str]  # distribution registry only


class RawRegistryRequest(TypedDict):
    id: str
    host: str
    method: str
    useragent: str
    addr: NotRequired[str]  # distribution registry only


class RawImagePushedData(TypedDict):
    id: str
    timestamp: str
    action: str  # "push"
    target: RawRegistryTarget
    request: RawRegistryRequest


def parse_blob_created(payload: Mapping[str, Any] | bytes | str, *,
                       models_container: str = "models") -> ModelUploaded | Ignored:
    """`Microsoft.Storage.BlobCreated` -> ModelUploaded, for `<name>/<version>/<file>` in `models_container`."""
    envelope = _envelope(payload, BLOB_CREATED)
    if isinstance(envelope, Ignored):
        return envelope
    container, blob_name = _blob_subject(envelope.event.text("subject"))
    if container != models_container:
        return Ignored(f"blob in container {shown(container)}, not in the models container {models_container!r}")
    data = envelope.data
    api, length, etag = data.text("api"), data.integer("contentLength"), data.text("eTag")
    url, sequencer = data.url("url"), data.text("sequencer")
    if api == "CreateFile":
        return Ignored("CreateFile only creates an empty file (ADLS); the model is complete at FlushWithClose")
    if length == 0:
        return Ignored(f"blob {shown(blob_name)} is empty")
    path = _model_path(blob_name)
    if isinstance(path, Ignored):
        return path
    name, version, _ = path
    return ModelUploaded(event_id=envelope.id, model_name=name, model_version=version, blob_name=blob_name,
                         url=url, content_length=length, etag=etag, sequencer=sequencer, event_time=envelope.time)


def parse_model_registered(payload: Mapping[str, Any] | bytes | str, *,
                           workspace: str = "") -> ModelRegistered | Ignored:
    """`Microsoft.MachineLearningServices.ModelRegistered` -> ModelRegistered. Azure ML writes the data's keys in
    camelCase or PascalCase, and the version as a string or a number: both are read. With `workspace` (an ARM
    id), an event of any other workspace is ignored. ModelDeployed and the rest are ignored by their type."""
    envelope = _envelope(payload, MODEL_REGISTERED)
    if isinstance(envelope, Ignored):
        return envelope
    event = envelope.event
    topic = event.text("source" if "specversion" in event.raw else "topic")
    if not _WORKSPACE.fullmatch(topic):
        raise errors.InvalidEvent(f"{event.where}.topic is not an Azure ML workspace's resource id")
    if workspace and topic.lower() != workspace.rstrip("/").lower():
        return Ignored(f"a model registered in workspace {shown(topic)}, not in {workspace}")
    data = envelope.data
    name = data.raw.get("modelName", data.raw.get("ModelName"))
    version = data.raw.get("modelVersion", data.raw.get("ModelVersion"))
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(name, str) or not REGISTERED_NAME.fullmatch(name):
        raise errors.InvalidEvent(f"{data.where}.modelName is missing or not a model name")
    if not isinstance(version, str) or not _REGISTERED_VERSION.fullmatch(version):
        raise errors.InvalidEvent(f"{data.where}.modelVersion is missing or not a version number")
    return ModelRegistered(event_id=envelope.id, model_name=name, model_version=version, workspace=topic,
                           event_time=envelope.time)


def workspace_of(uri: str) -> str:
    """The Azure ML workspace's ARM id an azureml:// MLflow tracking URI names ("" for any other URI)."""
    match = _WORKSPACE.search(uri) if uri.startswith("azureml://") else None
    return match[0] if match else ""


def parse_image_pushed(payload: Mapping[str, Any] | bytes | str) -> ImagePushed | Ignored:
    """`Microsoft.ContainerRegistry.ImagePushed` -> ImagePushed, for image manifests and indexes only."""
    envelope = _envelope(payload, IMAGE_PUSHED)
    if isinstance(envelope, Ignored):
        return envelope
    data = envelope.data
    action, target, request = data.text("action"), data.obj("target"), data.obj("request")
    media_type, tag = target.text("mediaType"), target.opt_text("tag")
    if action != "push":
        return Ignored(f"registry action {shown(action)} is not a push")
    if media_type not in IMAGE_MEDIA_TYPES:
        return Ignored(f"media type {shown(media_type)} is not an image manifest")
    if tag is not None and _COSIGN_TAG.fullmatch(tag):
        return Ignored(f"tag {tag!r} is a cosign signature, attestation or SBOM, not an image")
    return ImagePushed(
        event_id=envelope.id, registry=request.matching("host", _HOST), event_time=envelope.time,
        repository=target.matching("repository", _REPOSITORY, max_length=255),
        tag=None if tag is None else target.matching("tag", _TAG),
        digest=target.matching("digest", DIGEST), media_type=media_type)


class _Envelope(NamedTuple):
    id: str
    time: datetime
    event: Fields
    data: Fields


def _envelope(payload: Mapping[str, Any] | bytes | str, expected_type: str) -> _Envelope | Ignored:
    event = Fields.of(payload, "event")
    cloud = "specversion" in event.raw
    if cloud and event.raw["specversion"] != "1.0":
        raise errors.InvalidEvent("event.specversion is not the CloudEvents version 1.0")
    event_type = event.text("type" if cloud else "eventType")
    if event_type != expected_type:
        return Ignored(f"event type {shown(event_type)} is not {expected_type}")
    return _Envelope(event.text("id"), event.time("time" if cloud else "eventTime"), event, event.obj("data"))


def _blob_subject(subject: str) -> tuple[str, str]:
    match = _BLOB_SUBJECT.fullmatch(subject)
    if match is None:
        raise errors.InvalidEvent("event.subject is not /blobServices/default/containers/<container>/blobs/<name>")
    return match[1], match[2]


def _model_path(blob_name: str) -> tuple[str, str, str] | Ignored:
    # The regex admits ASCII letters, digits and ._- only: `%2e%2e`, backslashes, spaces, control characters
    # and non-ASCII letters never reach a file system path or an image label.
    match = _MODEL_PATH.fullmatch(blob_name)
    if match is None or ".." in blob_name:
        return Ignored(f"blob name {shown(blob_name)} is not a model path <name>/<version>/<file>")
    if match[3].lower() in SIDECAR_FILES:
        return Ignored(f"{match[3]} travels with the model but is not the model")
    return match[1], match[2], match[3]


def shown(text: str) -> str:
    """A value fit for a log line: quoted, ASCII only, at most 120 characters of it."""
    return ascii(text[:120])


class Fields:
    """Typed reads from one JSON object. Errors name the path (`event.data.url`), never the value."""

    __slots__ = ("raw", "where")

    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        self.raw, self.where = raw, where

    @classmethod
    def of(cls, payload: object, where: str) -> Fields:
        """A JSON object, given parsed or as the bytes or text of a JSON document."""
        if isinstance(payload, (bytes, bytearray, str)):
            payload = _load_json(payload, where)
        if not isinstance(payload, Mapping):
            raise errors.InvalidEvent(f"{where} is not a JSON object")
        return cls(payload, where)

    def _get(self, key: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise errors.InvalidEvent(f"{self.where}.{key} is missing")
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise errors.InvalidEvent(f"{self.where}.{key} has the wrong type {type(value).__name__}")
        return value

    def text(self, key: str) -> str:
        value = self._get(key, str)
        if not value:
            raise errors.InvalidEvent(f"{self.where}.{key} is empty")
        return value

    def opt_text(self, key: str) -> str | None:
        return self._get(key, str, required=False) or None

    def integer(self, key: str) -> int:
        value = self._get(key, int)
        if value < 0:
            raise errors.InvalidEvent(f"{self.where}.{key} is negative")
        return value

    def opt_integer(self, key: str, *, default: int) -> int:
        return default if self.raw.get(key) is None else self.integer(key)

    def flag(self, key: str) -> bool:
        return bool(self._get(key, bool, required=False))

    def obj(self, key: str) -> Fields:
        return Fields(self._get(key, Mapping), f"{self.where}.{key}")

    def objects(self, key: str) -> list[Fields]:
        items = self._get(key, list)
        return [Fields.of(item, f"{self.where}.{key}[{i}]") for i, item in enumerate(items)]

    def matching(self, key: str, pattern: re.Pattern[str], *, what: str = "", max_length: int = 1000) -> str:
        value = self.text(key)
        if len(value) > max_length or not pattern.fullmatch(value):
            raise errors.InvalidEvent(f"{self.where}.{key} is not a valid {what or key}")
        return value

    def time(self, key: str) -> datetime:
        """An RFC 3339 time with a zone (Event Grid sends 7 fractional digits, registries 9), in UTC."""
        value = self._get(key, (str, datetime))
        try:
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(value.strip().upper())
        except ValueError:
            raise errors.InvalidEvent(f"{self.where}.{key} is not an RFC 3339 time") from None
        if moment.tzinfo is None:
            raise errors.InvalidEvent(f"{self.where}.{key} has no time zone")
        return moment.astimezone(UTC)

    def url(self, key: str, *, local: bool = False) -> str:
        """An http(s) URL without its query string, fragment and user info (a SAS token or password).
        `local` also allows a file:///path URL (a git repository on this machine)."""
        try:
            parts = urlsplit(self.text(key))
        except ValueError:
            parts = None
        is_file = local and parts is not None and parts.scheme == "file" and not parts.netloc and parts.path
        if not is_file and (parts is None or parts.scheme not in ("http", "https") or not parts.hostname):
            raise errors.InvalidEvent(f"{self.where}.{key} is not an http(s) URL")
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _load_json(document: bytes | bytearray | str, where: str) -> Any:
    try:
        return json.loads(document)
    except json.JSONDecodeError as e:
        raise errors.InvalidEvent(f"{where} is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (ValueError, RecursionError) as e:  # not UTF-8, an integer of 4300+ digits, nesting too deep
        raise errors.InvalidEvent(f"{where} is not usable JSON ({type(e).__name__})") from None
