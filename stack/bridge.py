"""The local event bridge: it stands in for Event Grid, which Azurite, the distribution registry and MLflow lack.

Three sources, one delivery (stack.delivery: at-least-once, retried, dead-lettered):

- Blob watcher. Azurite has no change feed and no Event Grid, so the bridge lists the models container every
  `poll_interval_s` (committed blobs, with metadata) and, for each blob that is new or whose ETag changed,
  sends the `Microsoft.Storage.BlobCreated` event Azure Storage would send (Event Grid schema: topic of the
  storage account, subject `/blobServices/default/containers/<c>/blobs/<name>`, data with api, clientRequestId,
  requestId, eTag, contentType, contentLength, blobType, url, sequencer, storageDiagnostics) to
  `functionName=model_uploaded`. What it has seen (name -> ETag, and the sequencer counter) is kept in
  `$SHIPBOT_STATE/bridge/blob-watcher.json`, saved only after the events are in the outbox: a restarted
  bridge neither replays old blobs nor loses one uploaded while it was down. On its very first start it takes
  the container as it finds it, as a new Event Grid subscription would (`announce_existing=True` announces
  those blobs instead).
  Sequencers grow by one per event across restarts (32 hex digits), so they order events on one blob.
- Registry notifications. The distribution registry POSTs its notification envelopes to the host
  (`/runtime/bridge/registry`, `Authorization: Bearer <secret>`); `accept_registry` turns manifest pushes into
  the `Microsoft.ContainerRegistry.ImagePushed` events ACR sends (shared.webhooks) and enqueues them for
  `functionName=image_pushed` before the host answers 202, so the registry is answered at once. An envelope
  that cannot be read is dead-lettered, not refused: the registry would retry a refused one forever and hold
  back every later notification behind it.
- Model registry. stack.registry_watcher searches the MLflow registry every poll and sends Azure ML's
  `Microsoft.MachineLearningServices.ModelRegistered` for each version newly READY, to
  `functionName=model_registered`.

The bridge runs on its own thread with its own asyncio loop; `start()` and `stop()` are synchronous.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared import errors, events, webhooks
from stack import registry_watcher
from stack.delivery import Deliverer, RetryPolicy, Subscription

log = logging.getLogger("stack.bridge")
LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
LOCAL_RESOURCE_GROUP = "shipbot-local"
BLOB_SUBSCRIPTION, IMAGE_SUBSCRIPTION, MODEL_SUBSCRIPTION = "model-uploaded", "image-pushed", "model-registered"
LOCAL_WORKSPACE = "local"


class BlobWatcher:
    """One container's committed blobs -> BlobCreated events for the new and the changed ones."""

    def __init__(self, container: ContainerClient, state_path: Path, *, subscription_id: str = LOCAL_SUBSCRIPTION,
                 resource_group: str = LOCAL_RESOURCE_GROUP, announce_existing: bool = False) -> None:
        self.container = container
        self.state_path = state_path
        self.topic = (f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/"
                      f"Microsoft.Storage/storageAccounts/{container.account_name}")
        self._seen: dict[str, str] | None = None
        self._sequencer = 0
        self._announce_existing = announce_existing
        self._load()

    def poll(self) -> list[dict[str, Any]]:
        """List the container once; the events for what changed since the last poll (state not yet saved)."""
        try:
            blobs = list(self.container.list_blobs(include=["metadata"]))
        except AzureError as e:
            if getattr(e, "status_code", None) == 404:
                self._create_container()
                blobs = []
            else:
                raise
        current = {blob.name: blob for blob in blobs}
        first = self._seen is None
        seen = self._seen or {}
        changed = [blob for name, blob in current.items() if seen.get(name) != blob.etag]
        self._seen = {name: blob.etag for name, blob in current.items()}
        if first and not self._announce_existing:
            return []
        return [self._event(blob) for blob in sorted(changed, key=lambda b: (b.last_modified, b.name))]

    def save(self) -> None:
        doc = {"container": self.container.container_name, "sequencer": self._sequencer, "blobs": self._seen or {}}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.state_path)

    def _load(self) -> None:
        if not self.state_path.exists():
            return
        doc = json.loads(self.state_path.read_text())
        if doc.get("container") == self.container.container_name:
            self._seen, self._sequencer = dict(doc.get("blobs") or {}), int(doc.get("sequencer") or 0)

    def _create_container(self) -> None:
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

    def _event(self, blob: Any) -> dict[str, Any]:
        self._sequencer += 1
        name = blob.name
        return {
            "topic": self.topic,
            "subject": f"/blobServices/default/containers/{self.container.container_name}/blobs/{name}",
            "eventType": events.BLOB_CREATED,
            "id": str(uuid.uuid4()),
            "data": {
                "api": self._api(name),
                "clientRequestId": str(uuid.uuid4()),
                "requestId": str(uuid.uuid4()),
                "eTag": blob.etag if blob.etag.startswith('"') else f'"{blob.etag}"',
                "contentType": blob.content_settings.content_type or "application/octet-stream",
                "contentLength": blob.size,
                "blobType": str(getattr(blob.blob_type, "value", blob.blob_type) or "BlockBlob"),
                "url": f"{self.container.url.rstrip('/')}/{quote(name)}",
                "sequencer": f"{self._sequencer:032x}",
                "storageDiagnostics": {"batchId": str(uuid.uuid4())},
            },
            "dataVersion": "",
            "metadataVersion": "1",
            "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }

    def _api(self, name: str) -> str:
        """PutBlockList for a blob committed from blocks (large uploads), PutBlob for a single-shot upload."""
        try:
            committed, _ = self.container.get_blob_client(name).get_block_list("committed")
        except AzureError:
            return "PutBlob"
        return "PutBlockList" if committed else "PutBlob"


@dataclass(frozen=True)
class BridgeOptions:
    """Where events go and where they come from. Function names are the subscriptions' targets."""

    blob_function: str | None = "model_uploaded"  # None: no blob watcher
    image_function: str | None = "image_pushed"  # None: registry notifications are refused
    model_function: str | None = "model_registered"  # None: no model registry watcher
    mlflow_uri: str | None = None  # the MLflow registry to watch; None: none
    models_container: str = "models"
    poll_interval_s: float = 1.0
    announce_existing: bool = False
    subscription_id: str = LOCAL_SUBSCRIPTION
    resource_group: str = LOCAL_RESOURCE_GROUP
    registry_name: str = "local"
    policy: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class _Polled:
    """A source the bridge polls: its watcher (`poll()` -> events, `save()`), the subscription its events go to,
    the errors that mean it is unreachable, and words for the log."""

    watcher: Any
    subscription: str
    errors: tuple[type[BaseException], ...]
    what: str
    doing: str
    describe: Any  # event -> "blob diabetes/1/model.joblib"
    failing: bool = False


def _shown_url(url: str) -> str:
    """A URL as a log line may show it: no user info, query or fragment."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


class Bridge:
    """The blob watcher, the registry relay and their deliveries, on one background thread."""

    def __init__(self, *, state_dir: Path, host_url: str, eventgrid_key: str, storage: str | None = None,
                 registry_secret: str | None = None, options: BridgeOptions | None = None,
                 deliverer: Deliverer | None = None) -> None:
        self.options = options or BridgeOptions()
        self.state_dir = state_dir
        self._registry_secret = registry_secret
        self.deliverer = deliverer or Deliverer(state_dir / "bridge" / "outbox", state_dir / "deadletter",
                                                policy=self.options.policy)
        self.registry_topic = (f"/subscriptions/{self.options.subscription_id}/resourceGroups/"
                               f"{self.options.resource_group}/providers/Microsoft.ContainerRegistry/registries/"
                               f"{self.options.registry_name}")
        for name, function in ((BLOB_SUBSCRIPTION, self.options.blob_function),
                               (IMAGE_SUBSCRIPTION, self.options.image_function),
                               (MODEL_SUBSCRIPTION, self.options.model_function)):
            if function:
                query = urlencode({"functionName": function, "code": eventgrid_key})
                self.deliverer.subscribe(Subscription(name, f"{host_url.rstrip('/')}/runtime/webhooks/eventgrid?{query}"))
        self.watcher: BlobWatcher | None = None
        if storage and self.options.blob_function:
            # Few, short retries: a poll that fails is simply the next poll's to repeat.
            container = BlobServiceClient.from_connection_string(
                storage, retry_total=1, connection_timeout=5, read_timeout=20).get_container_client(
                self.options.models_container)
            self.watcher = BlobWatcher(container, state_dir / "bridge" / "blob-watcher.json",
                                       subscription_id=self.options.subscription_id,
                                       resource_group=self.options.resource_group,
                                       announce_existing=self.options.announce_existing)
        self.models: registry_watcher.RegistryWatcher | None = None
        if self.options.mlflow_uri and self.options.model_function:
            self.models = registry_watcher.RegistryWatcher(
                self.options.mlflow_uri, state_dir / "bridge" / "model-registry.json",
                topic=(f"/subscriptions/{self.options.subscription_id}/resourceGroups/{self.options.resource_group}/"
                       f"providers/Microsoft.MachineLearningServices/workspaces/{LOCAL_WORKSPACE}"))
        self._blobs = None if self.watcher is None else _Polled(
            self.watcher, BLOB_SUBSCRIPTION, (AzureError,), what="the models container",
            doing=f"listing container {self.options.models_container}",
            describe=lambda event: "blob " + event["subject"].rpartition("/blobs/")[2])
        self._models = None if self.models is None else _Polled(
            self.models, MODEL_SUBSCRIPTION, registry_watcher.ERRORS, what="the model registry",
            doing=f"searching the model registry at {_shown_url(self.options.mlflow_uri or '')}",
            describe=lambda event: "model " + event["subject"].removeprefix("models/"))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self.polls = 0  # the blob watcher's

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bridge", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            log.warning("bridge: still starting after 30 s (storage slow to answer?); the host starts anyway")

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stopped = asyncio.get_running_loop(), asyncio.Event()
        await self.deliverer.start()
        watchers = []
        # The first look happens before start() returns, so a blob uploaded (or a model registered) once the host
        # answers, as `shipbot up` then the demo do, is news even on the very first start, when the look is a
        # baseline.
        for source in (self._blobs, self._models):
            if source is not None:
                await self._poll(source)
                watchers.append(asyncio.create_task(self._watch(source)))
        self._ready.set()
        await self._stopped.wait()
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        if self.models is not None:
            self.models.close()
        await self.deliverer.stop()

    # -- sources ---------------------------------------------------------------------------------------------
    async def _watch(self, source: _Polled) -> None:
        while True:
            await asyncio.sleep(self.options.poll_interval_s)  # the poll interval itself, not a synchronisation
            await self._poll(source)

    async def _poll(self, source: _Polled) -> None:
        """One poll of a source: its events into the outbox, then its state saved. A failure is logged once until
        the source answers again; the next poll repeats the work."""
        try:
            found = await asyncio.to_thread(source.watcher.poll)
            for event in found:
                self.deliverer.enqueue(source.subscription, event)
                log.info("bridge: %s -> %s %s", source.describe(event), event["eventType"].rsplit(".", 1)[-1],
                         event["id"], extra={"fields": {"event_id": event["id"]}})
            await asyncio.to_thread(source.watcher.save)
            if source.failing:
                log.info("bridge: %s answers again", source.what)
            source.failing = False
        except source.errors as e:
            if not source.failing:
                log.warning("bridge: %s failed (%s); retrying every poll", source.doing, type(e).__name__)
            source.failing = True
        except Exception:  # a bug of ours (or a full disk) must not end the watcher silently
            if not source.failing:
                log.exception("bridge: the watcher of %s failed; retrying every poll", source.what)
            source.failing = True
        if source is self._blobs:
            self.polls += 1

    def authorizes(self, authorization: str | None) -> bool:
        """Whether the registry's Authorization header carries the shared secret (constant time)."""
        if not self._registry_secret or not authorization:
            return False
        expected = f"Bearer {self._registry_secret}".encode()
        return hmac.compare_digest(authorization.strip().encode(), expected)

    @property
    def accepts_registry(self) -> bool:
        return bool(self._registry_secret and self.options.image_function)

    def accept_registry(self, body: bytes) -> int:
        """A registry notification envelope -> ImagePushed events enqueued (durably); returns how many."""
        try:
            found = webhooks.registry_notification_to_event_grid(body, topic=self.registry_topic)
        except errors.InvalidEvent as e:
            self._dead_letter_envelope(body, str(e))
            return 0
        for event in found:
            self.deliverer.enqueue(IMAGE_SUBSCRIPTION, event)
            log.info("bridge: registry push %s -> ImagePushed %s", event["subject"], event["id"],
                     extra={"fields": {"event_id": event["id"]}})
        return len(found)

    def _dead_letter_envelope(self, body: bytes, reason: str) -> None:
        target = self.state_dir / "deadletter" / "registry" / f"{uuid.uuid4()}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"deadLetterReason": "UnreadableNotification", "detail": reason,
                                      "publishTime": datetime.now(UTC).isoformat(),
                                      "body": body.decode("utf-8", "replace")}, indent=2))
        log.warning("bridge: dead-lettered an unreadable registry notification: %s", reason,
                    extra={"fields": {"deadletter": str(target)}})

    def status(self) -> dict[str, Any]:
        return {"blob_watcher": self.watcher is not None, "registry": self.accepts_registry,
                "model_registry": self.models is not None,
                "pending": self.deliverer.pending(), "delivered": self.deliverer.delivered,
                "dead_lettered": self.deliverer.dead_lettered, "polls": self.polls}
