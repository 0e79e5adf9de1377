"""Inbound webhooks: git servers' -> `CommitPushed`, `Pinged` or `Ignored`; the registry's -> Event Grid events.

Git webhooks (GitHub, Azure DevOps): the HTTP trigger hands over the request's headers and raw body.
`events.TooLarge` (HTTP 413) past MAX_WEBHOOK_BYTES, checked before any hashing; `events.Unauthenticated`
(401) for a missing or wrong signature or password, checked before a byte of JSON is read;
`errors.InvalidEvent` (400) for what cannot be understood; ValueError for an empty secret or release branch,
a configuration error: without a secret every webhook is refused, never accepted. A push that does not move
the release branch to a commit is `Ignored`.

Registry notifications (the local distribution registry's): the local event bridge turns them into the
`Microsoft.ContainerRegistry.ImagePushed` events ACR sends, which `events.parse_image_pushed` reads.

Pure. No I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict

from shared import errors, events

MAX_WEBHOOK_BYTES = 1024 * 1024
"""GitHub caps payloads at 25 MB, but a push to one branch is a few kB; more is a mistake or an attack."""

_COMMIT = re.compile(r"[0-9a-f]{40}")
_NO_COMMIT = "0" * 40  # the "after" of a deleted branch, the "before" of a created one


class RawGitHubPush(TypedDict):
    ref: str  # refs/heads/<branch> | refs/tags/<tag>
    before: str
    after: str
    deleted: bool
    repository: dict[str, Any]  # full_name, clone_url, pushed_at (Unix seconds in push events)
    pusher: dict[str, Any]  # name, email


class RawAzureDevOpsRefUpdate(TypedDict):
    name: str
    oldObjectId: str
    newObjectId: str


class RawAzureDevOpsPush(TypedDict):
    id: str
    eventType: str  # "git.push"
    createdDate: str
    resource: dict[str, Any]  # refUpdates, repository {id, name, remoteUrl, project}, pushedBy


def parse_github_webhook(headers: Mapping[str, str], body: bytes, *, secret: str,
                         release_branch: str) -> events.CommitPushed | events.Pinged | events.Ignored:
    """A GitHub webhook delivery, signed with X-Hub-Signature-256 (HMAC-SHA256 of the raw body)."""
    branch = _configured(secret, release_branch)
    _check_size(body)
    header = {name.lower(): value for name, value in headers.items()}
    _check_github_signature(header.get("x-hub-signature-256"), body, secret)
    kind, delivery = _header(header, "x-github-event"), _header(header, "x-github-delivery")
    if kind not in ("ping", "push"):
        return events.Ignored(f"GitHub event {events.shown(kind)} is not handled")
    if "x-www-form-urlencoded" in header.get("content-type", ""):
        raise errors.InvalidEvent("the GitHub webhook sends form data: set its content type to application/json")
    payload = events.Fields.of(body, "body")
    if kind == "ping":
        return events.Pinged(event_id=delivery, zen=payload.text("zen"))
    return _github_push(delivery, payload, branch)


def _github_push(delivery: str, push: events.Fields, branch: str) -> events.CommitPushed | events.Ignored:
    ref, after = push.text("ref"), push.text("after")
    if ref != f"refs/heads/{branch}":
        return events.Ignored(f"push to {events.shown(ref)}, not to the release branch {branch!r}")
    if push.flag("deleted") or after == _NO_COMMIT:
        return events.Ignored(f"the release branch {branch!r} was deleted")
    repository = push.obj("repository")
    return events.CommitPushed(
        event_id=delivery, source="github", repository=repository.text("full_name"), branch=branch,
        commit=_commit(push, "after"), clone_url=repository.url("clone_url", local=True),
        pusher=push.obj("pusher").text("name"), event_time=_pushed_at(repository))


def _pushed_at(repository: events.Fields) -> datetime:
    # Push events carry repository.pushed_at as Unix seconds, the REST API as an RFC 3339 string.
    value = repository.raw.get("pushed_at")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return datetime.fromtimestamp(value, UTC)
    return repository.time("pushed_at")


def _check_github_signature(signature: str | None, body: bytes, secret: str) -> None:
    if not signature:
        raise events.Unauthenticated("X-Hub-Signature-256 is missing: give the GitHub webhook a secret")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.strip().encode(errors="replace")):
        raise events.Unauthenticated("X-Hub-Signature-256 does not match the body and the configured secret")


def parse_azure_devops_webhook(headers: Mapping[str, str], body: bytes, *, secret: str,
                               release_branch: str) -> events.CommitPushed | events.Ignored:
    """An Azure DevOps service hook `git.push`, authenticated by the hook's Basic authentication password."""
    branch = _configured(secret, release_branch)
    _check_size(body)
    header = {name.lower(): value for name, value in headers.items()}
    _check_basic_password(header.get("authorization"), secret)
    hook = events.Fields.of(body, "body")
    event_id, kind = hook.text("id"), hook.text("eventType")
    if kind != "git.push":
        return events.Ignored(f"Azure DevOps event {events.shown(kind)} is not handled")
    resource = hook.obj("resource")
    updates = [update for update in resource.objects("refUpdates") if update.text("name") == f"refs/heads/{branch}"]
    if not updates:
        return events.Ignored(f"the push does not update the release branch {branch!r}")
    if updates[0].text("newObjectId") == _NO_COMMIT:
        return events.Ignored(f"the release branch {branch!r} was deleted")
    repository, pushed_by = resource.obj("repository"), resource.obj("pushedBy")
    return events.CommitPushed(
        event_id=event_id, source="azure-devops", repository=_azure_devops_repository(repository), branch=branch,
        commit=_commit(updates[0], "newObjectId"), clone_url=repository.url("remoteUrl"),
        pusher=pushed_by.opt_text("uniqueName") or pushed_by.text("displayName"),
        event_time=hook.time("createdDate"))


def _azure_devops_repository(repository: events.Fields) -> str:
    """`<project>/<repository>`, as GitHub's `<owner>/<repository>`: repository names repeat across projects."""
    name = repository.text("name")
    if repository.raw.get("project") is None:
        return name
    return f"{repository.obj('project').text('name')}/{name}"


def _check_basic_password(authorization: str | None, secret: str) -> None:
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        raise events.Unauthenticated("Authorization: Basic credentials are missing")
    try:
        credentials = base64.b64decode(token.strip(), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise events.Unauthenticated("Authorization: Basic credentials are not base64") from None
    _, colon, password = credentials.partition(b":")
    if not colon or not hmac.compare_digest(password, secret.encode()):
        raise events.Unauthenticated("the Basic authentication password does not match the configured secret")


def claimed_source(provider: str, body: bytes) -> tuple[str, tuple[str, ...]]:
    """The repository URL and the branches a delivery says it pushed, read before it is authenticated: only to
    choose whose secret authenticates it (the application whose source that is). ("", ()) when the body does
    not say; nothing read here is acted on until the signature checks out."""
    if len(body) > MAX_WEBHOOK_BYTES:
        return "", ()
    try:
        doc = json.loads(body)
        if provider == "github":
            url, refs = doc["repository"]["clone_url"], [doc["ref"]]
        else:
            resource = doc["resource"]
            url, refs = resource["repository"]["remoteUrl"], [u["name"] for u in resource["refUpdates"]]
    except (ValueError, KeyError, TypeError):
        return "", ()
    if not isinstance(url, str) or not all(isinstance(ref, str) for ref in refs):
        return "", ()
    return url, tuple(ref.removeprefix("refs/heads/") for ref in refs if ref.startswith("refs/heads/"))


def _configured(secret: str, release_branch: str) -> str:
    if not secret:
        raise ValueError("the webhook secret is empty: configure one (unauthenticated webhooks are refused)")
    branch = release_branch.removeprefix("refs/heads/")
    if not branch:
        raise ValueError("the release branch is empty")
    return branch


def _check_size(body: bytes) -> None:
    if len(body) > MAX_WEBHOOK_BYTES:
        raise events.TooLarge(f"the webhook body is too large: {len(body)} bytes, at most {MAX_WEBHOOK_BYTES}")


def _header(header: Mapping[str, str], name: str) -> str:
    value = header.get(name, "").strip()
    if not value:
        raise errors.InvalidEvent(f"the {name} header is missing")
    return value


def _commit(fields: events.Fields, key: str) -> str:
    return fields.matching(key, _COMMIT, what="commit id (40 hex digits)")


class RawRegistryNotification(TypedDict):
    """The CNCF distribution registry's notification envelope (media type ...distribution.events.v1+json)."""

    events: list[dict[str, Any]]  # each: events.RawImagePushedData plus actor and source


def registry_notification_to_event_grid(envelope: Mapping[str, Any] | bytes | str, *,
                                        topic: str) -> list[dict[str, Any]]:
    """A distribution registry notification -> the ImagePushed events ACR would send (Event Grid schema).

    The local event bridge delivers them; pulls, deletes, mounts and blob pushes are dropped. Each event keeps
    the registry's event id, so a notification the registry retries converges on the same deliveries.
    """
    notified = events.Fields.of(envelope, "notification").objects("events")
    return [_acr_event(event, topic) for event in notified if _is_manifest_push(event)]


def _is_manifest_push(event: events.Fields) -> bool:
    return event.text("action") == "push" and event.obj("target").text("mediaType") in events.IMAGE_MEDIA_TYPES


def _acr_event(event: events.Fields, topic: str) -> dict[str, Any]:
    target, request = event.obj("target"), event.obj("request")
    repository, digest, tag = target.text("repository"), target.text("digest"), target.opt_text("tag")
    size = target.integer("size")
    acr_target = {"mediaType": target.text("mediaType"), "size": size, "digest": digest,
                  "length": target.opt_integer("length", default=size), "repository": repository}
    if tag is not None:
        acr_target["tag"] = tag
    return {
        "id": event.text("id"),
        "topic": topic,
        "subject": f"{repository}:{tag}" if tag else f"{repository}@{digest}",
        "eventType": events.IMAGE_PUSHED,
        "eventTime": event.time("timestamp").isoformat().replace("+00:00", "Z"),
        "data": {
            "id": event.text("id"), "timestamp": event.text("timestamp"), "action": "push", "target": acr_target,
            "request": {"id": request.text("id"), "host": request.text("host"), "method": request.text("method"),
                        "useragent": request.opt_text("useragent") or ""},
        },
        "dataVersion": "1.0",
        "metadataVersion": "1",
    }
