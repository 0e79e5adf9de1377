"""The event bridge's third source: an MLflow model registry, which has no Event Grid. Azure ML workspaces send
`Microsoft.MachineLearningServices.ModelRegistered` when a version is registered; the local MLflow server sends
nothing (its registry webhooks are experimental, https-only by default, and say nothing of stages), so the
bridge searches the registry's versions every poll and sends that event for each version that became READY
since the last one, as Azure ML would: topic a workspace's resource id, subject `models/<name>:<version>`, data
{modelName, modelVersion, modelTags, modelProperties}.

Like Azure ML, it says nothing when an alias or a stage moves: the reconcile timer finds those. What it has seen
is kept in `$SHIPBOT_STATE/bridge/model-registry.json`, saved only after the events are in the outbox; on its very
first start it takes the registry as it finds it (a new Event Grid subscription sends nothing of the past).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from shared import events

PAGE = 1000
ERRORS = (httpx.HTTPError, ValueError, KeyError, TypeError)  # a poll that fails is the next poll's to repeat


class RegistryWatcher:
    def __init__(self, uri: str, state_path: Path, *, topic: str, client: httpx.Client | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.state_path = state_path
        self.topic = topic
        self._client = client or httpx.Client(timeout=httpx.Timeout(20.0, connect=3.0))
        self._seen: set[str] | None = None
        self._polled: set[str] | None = None
        self._load()

    def poll(self) -> list[dict[str, Any]]:
        """Search every version once; the events of the versions READY since the last poll (state not saved)."""
        ready = {}
        token = ""
        while True:
            params = {"max_results": str(PAGE), **({"page_token": token} if token else {})}
            answer = self._client.get(f"{self.uri}/api/2.0/mlflow/model-versions/search", params=params)
            answer.raise_for_status()
            page = answer.json()
            for version in page.get("model_versions") or ():
                if version.get("status") == "READY":
                    ready[f"{version['name']}:{version['version']}"] = version
            token = page.get("next_page_token") or ""
            if not token:
                break
        first, seen = self._seen is None, self._seen or set()
        new = [v for key, v in ready.items() if key not in seen]
        self._polled = seen | set(ready)  # seen once save() is called, after the events are in the outbox
        if first:
            self._seen = self._polled
            return []
        return [self._event(v) for v in sorted(new, key=lambda v: (int(v.get("creation_timestamp") or 0),
                                                                   v["name"], int(v["version"])))]

    def save(self) -> None:
        """What the last poll found is seen from now on (the bridge calls it once the events are in the outbox)."""
        self._seen = self._polled if self._polled is not None else self._seen
        doc = {"uri": self.uri, "versions": sorted(self._seen or ())}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.state_path)

    def close(self) -> None:
        self._client.close()

    def _load(self) -> None:
        if not self.state_path.exists():
            return
        doc = json.loads(self.state_path.read_text())
        if doc.get("uri") == self.uri:
            self._seen = set(doc.get("versions") or ())

    def _event(self, version: dict[str, Any]) -> dict[str, Any]:
        tags = {t.get("key"): t.get("value") for t in version.get("tags") or () if isinstance(t, dict)}
        return {
            "topic": self.topic,
            "subject": f"models/{version['name']}:{version['version']}",
            "eventType": events.MODEL_REGISTERED,
            "id": str(uuid.uuid4()),
            "data": {"modelName": version["name"], "modelVersion": str(version["version"]), "modelTags": tags,
                     "modelProperties": {"run_id": version.get("run_id") or ""}},
            "dataVersion": "2",
            "metadataVersion": "1",
            "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
