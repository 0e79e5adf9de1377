"""The CLI's client of ShipBot's HTTP API (`/api/...`), the same against the local host and a function app in
Azure.

Every request carries the function key (`x-functions-key`) and who asks (`x-shipbot-actor`, recorded in the
ledger). Answers are the API's JSON, returned as plain dicts so that `--json` prints exactly what the API said
and a field the CLI does not know yet passes through. Failures become two exceptions the CLI prints:
`ApiError` (the API answered with an error: `{"error": {"code", "message"}}`) and `Unreachable` (no answer).
Neither message ever contains the key.
"""

from __future__ import annotations

import getpass
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

DEFAULT_URL = "http://127.0.0.1:7071"
TIMEOUT = httpx.Timeout(15.0, connect=3.0)  # the API answers within seconds (202 + job); long work is async


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, code: str, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or []  # e.g. a fleet file's, each with its line and key


class Unreachable(Exception):
    """No answer: nothing listens, DNS, TLS or a timeout."""


class InvalidArgument(ValueError):
    """An argument the API could not be asked about (an id with a slash): a usage error."""


def is_local(url: str) -> bool:
    """Whether `url` points at this machine (the local host that `shipbot up` starts)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_actor() -> str:
    """`$USER@hostname`, what the ledger records as `by` for this person's requests."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Client:
    """ShipBot's API. Methods return the API's JSON; errors raise ApiError or Unreachable."""

    def __init__(self, base_url: str = DEFAULT_URL, *, key: str | None = None, actor: str | None = None,
                 timeout: httpx.Timeout | float = TIMEOUT, transport: httpx.BaseTransport | None = None,
                 app: str | None = None) -> None:
        self.app = app  # every call is about this application (`?app=`); None: the only one
        headers = {"x-shipbot-actor": actor or default_actor(), "accept": "application/json",
                   "user-agent": "shipbot-cli"}
        if key:
            headers["x-functions-key"] = key
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- releases ---------------------------------------------------------------------------------------------
    def create_release(self, *, commit: str | None = None, model: str | None = None) -> dict[str, Any]:
        """POST /api/releases: {"release": ReleaseDoc} (202 when new, 200 when it existed)."""
        body = {k: v for k, v in (("commit", commit), ("model", model)) if v}
        return self._call("POST", "/api/releases", json=body)

    def list_releases(self, *, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first."""
        return self._call("GET", "/api/releases", params={"limit": limit}).get("releases", [])

    def get_release(self, release_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/releases/{_segment(release_id)}")

    def hold(self, release_id: str, *, reason: str) -> dict[str, Any]:
        return self._call("POST", f"/api/releases/{_segment(release_id)}/hold", json={"reason": reason})

    def unhold(self, release_id: str, *, reason: str | None = None) -> dict[str, Any]:
        body = {"reason": reason} if reason else None
        return self._call("DELETE", f"/api/releases/{_segment(release_id)}/hold", json=body)

    # -- environments -----------------------------------------------------------------------------------------
    def list_environments(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/environments").get("environments", [])

    def deploy(self, environment: str, *, release_id: str | None = None, digest: str | None = None,
               reason: str = "", force: bool = False) -> dict[str, Any]:
        """202 {"job", "release_id"}: the rollout runs on; watch GET /api/environments."""
        body: dict[str, Any] = {"reason": reason, "force": force}
        body.update({"release_id": release_id} if release_id else {"digest": digest})
        return self._call("POST", f"/api/environments/{_segment(environment)}/deploy", json=body)

    def promote(self, *, to: str = "production", release_id: str | None = None, reason: str = "",
                force: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason, "force": force}
        if release_id:
            body["release_id"] = release_id
        return self._call("POST", f"/api/environments/{_segment(to)}/promote", json=body)

    def override(self, release_id: str, *, reason: str) -> dict[str, Any]:
        """200 {"release", "job": null}, or 202 {"job", "release_id", "release"} when a rollout was queued."""
        return self._call("POST", f"/api/releases/{_segment(release_id)}/override", json={"reason": reason})

    def approve(self, environment: str, release_id: str, *, reason: str) -> dict[str, Any]:
        """200 {"release", "job": null}, or 202 {"job", "release_id", "release"} when the rollout was queued."""
        return self._call("POST", f"/api/environments/{_segment(environment)}/approvals",
                          json={"release_id": release_id, "reason": reason})

    def list_apps(self) -> list[dict[str, Any]]:
        """Every application of the fleet, with its environments in chain order."""
        return self._call("GET", "/api/apps").get("apps", [])

    def rollback(self, environment: str, *, reason: str) -> dict[str, Any]:
        return self._call("POST", f"/api/environments/{_segment(environment)}/rollback", json={"reason": reason})

    def environment_history(self, environment: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/environments/{_segment(environment)}/history")["history"]

    def apply_fleet(self, text: str, *, reason: str = "") -> dict[str, Any]:
        return self._call("PUT", "/api/fleet", content=text.encode("utf-8"), params={"reason": reason} if reason else None,
                          headers={"Content-Type": "application/yaml"})

    def get_fleet(self, *, version: int | None = None) -> dict[str, Any]:
        return self._call("GET", "/api/fleet", params={"version": str(version)} if version is not None else None)

    def fleet_history(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/fleet/history")["versions"]

    # -- the wire ---------------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if self.app:
            kwargs["params"] = {**(kwargs.get("params") or {}), "app": self.app}
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as e:
            raise Unreachable(self._unreachable(f"cannot connect ({_reason(e)})")) from None
        except httpx.TimeoutException:
            raise Unreachable(f"{self.base_url} did not answer {method} {path} in time") from None
        except httpx.HTTPError as e:
            raise Unreachable(self._unreachable(_reason(e))) from None
        if response.is_success:
            try:
                doc = response.json()
            except ValueError:
                raise ApiError(response.status_code, "bad_response",
                               f"{method} {path} answered {response.status_code} without JSON") from None
            return doc if isinstance(doc, dict) else {"value": doc}
        raise _error(response)

    def _unreachable(self, what: str) -> str:
        hint = " Is the local stack up? Run `shipbot up`." if is_local(self.base_url) else (
            " Check SHIPBOT_API_URL.")
        return f"no answer from {self.base_url}: {what}.{hint}"


def _error(response: httpx.Response) -> ApiError:
    status = response.status_code
    problems: list[str] = []
    try:
        error = response.json().get("error") or {}
        code, message = str(error.get("code") or status), str(error.get("message") or "")
        problems = [str(p) for p in error.get("problems") or []]
    except (ValueError, AttributeError, TypeError):
        code, message = str(status), ""
    if not message:
        message = f"HTTP {status} {response.reason_phrase}".rstrip()
    if status == 401:
        message += " (check SHIPBOT_API_KEY: the function key of the app)"
    return ApiError(status, code, message, problems)


def _segment(value: str) -> str:
    """One path segment: an id never carries a slash; refuse rather than address another route."""
    if not value or "/" in value or value in (".", ".."):
        raise InvalidArgument(f"not a valid id: {value!r}")
    return value


def _reason(error: httpx.HTTPError) -> str:
    cause = error.__cause__ or error.__context__
    text = str(cause or error) or type(error).__name__
    if "refused" in text.lower():
        return "connection refused"
    return text
