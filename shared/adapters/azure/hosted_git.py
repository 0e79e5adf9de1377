"""What GitHubSource and AzureReposSource share: one repository's REST API over httpx, and safe extraction of
the archives those APIs serve.

Api.open() sends a GET and yields the streaming response once its status is a success. It follows up to
MAX_REDIRECTS redirects itself (GitHub answers 301 for a renamed repository and 302 to codeload for a tarball)
and puts the Authorization header only on requests to the API's own origin: a redirect to another host is a
fresh request without it. (httpx would strip it on a cross-origin redirect too, see Client._redirect_headers in
0.28, but this does not depend on that.) Nothing follows a redirect to anything but https.

Errors, the same for both hosts; messages name the repository and the status, never a credential:
    404 (and whatever else the caller names)            NotFound; from a redirect's target, TransientError
    401, 403                                            PermanentError: the token was refused / lacks access
    403 with x-ratelimit-remaining: 0 or Retry-After,   TransientError: rate limited
    429, 408, 5xx, timeouts, connection failures        TransientError
    203 (Azure DevOps' sign-in page), a body that is    PermanentError
    not JSON or not the expected document, any other
Api.retry() runs a call again on TransientError, ATTEMPTS times in all, with exponential backoff through the
injected `sleep` (tenacity), so tests are instant. get_json retries by itself; an archive download retries as a
whole (extracting the same tree again over a partial one converges on the same files).

Branch names and shas are checked with GitSource's patterns before any request (require_branch, require_sha).

Extraction never writes outside the destination: every member name is checked here (no absolute path, no
`..`), then by tarfile's "data" filter (links that leave the destination, device files, odd modes), which the
zip members pass through too.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import ssl
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import tenacity

from shared import errors
from shared.adapters.local import git_source

ATTEMPTS = 4                 # one call and three retries: about 0.5 + 1 + 2 s of backoff before giving up
MAX_REDIRECTS = 3
CHUNK_BYTES = 1 << 16
MAX_LINK_BYTES = 4096        # a symlink's target, stored as a zip member's content
MESSAGE_CHARS = 200          # of the server's own error message, quoted in ours
_FRACTION = re.compile(r"(\.\d{6})\d+")  # .NET writes 7 fractional digits; fromisoformat takes at most 6


class Api:
    """GET requests to one REST API (`api_url`, https only) on behalf of one repository, named `repository` in
    messages. `authorization()` gives the Authorization header's value for each request to the API's origin
    (None: anonymous); it is called per request, so a credential can refresh its token."""

    def __init__(self, *, api_url: str, repository: str, headers: Mapping[str, str],
                 authorization: Callable[[], str] | None, timeout_seconds: float, verify: bool | str,
                 sleep: Callable[[float], None]) -> None:
        parts = urlsplit(api_url)
        if parts.scheme != "https" or not parts.hostname or parts.username or parts.password or parts.query \
                or parts.fragment:
            raise errors.PermanentError(f"{repository}: the API URL must be https://host[/path], without user "
                                        "info or a query (credentials are never sent over plain HTTP)")
        self.api_url = api_url.rstrip("/")
        self.repository = repository
        self._origin = _origin(httpx.URL(self.api_url))
        self._authorization = authorization
        self._sleep = sleep
        context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        self._client = httpx.Client(headers=dict(headers), timeout=timeout_seconds, verify=context,
                                    follow_redirects=False)
        self.timeout_seconds = timeout_seconds
        _redact_query_tokens_from_httpx_logs()

    def get_json(self, path: str, *, params: Mapping[str, str] | None = None, what: str, missing: str,
                 not_found: tuple[int, ...] = (404,)) -> Any:
        """The JSON document at `path` (relative to the API URL), retried on TransientError."""

        def attempt() -> Any:
            with self.open(path, params=params, what=what, missing=missing, not_found=not_found) as response:
                response.read()
            try:
                return response.json()
            except ValueError:
                raise errors.PermanentError(f"{self.repository}: {what} answered something that is not JSON "
                                            f"({response.headers.get('content-type', 'no content type')})") from None

        return self.retry(attempt)

    def get_bytes(self, path: str, *, params: Mapping[str, str] | None = None,
                  headers: Mapping[str, str] | None = None, what: str, missing: str, max_bytes: int) -> bytes:
        """The body at `path`, whole, refused (PermanentError) once it passes `max_bytes`; retried on
        TransientError."""

        def attempt() -> bytes:
            data = bytearray()
            with self.open(path, params=params, headers=headers, what=what, missing=missing) as response:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    data += chunk
                    if len(data) > max_bytes:
                        raise errors.PermanentError(f"{self.repository}: {what} takes more than {max_bytes:,} bytes")
            return bytes(data)

        return self.retry(attempt)

    @contextlib.contextmanager
    def open(self, path: str, *, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
             what: str, missing: str, not_found: tuple[int, ...] = (404,)) -> Iterator[httpx.Response]:
        """The streaming response to GET `path` once it is a success (no retry: wrap the whole use in retry()).
        A transport failure while the block reads the body is a TransientError too."""
        response: httpx.Response | None = None
        try:
            request = self._client.build_request("GET", f"{self.api_url}{path}", params=params, headers=headers)
            response = self._send(request, what=what)
            self._check(response, what=what, missing=missing, not_found=not_found)
            yield response
        except httpx.TimeoutException:
            raise errors.TransientError(f"{self.repository}: {what} timed out "
                                        f"(after {self.timeout_seconds:g} s without data)") from None
        except httpx.HTTPError as e:  # its message can quote a URL: only the type goes into ours
            raise errors.TransientError(f"{self.repository}: {what} failed: {type(e).__name__}") from None
        finally:
            if response is not None:
                response.close()

    def retry(self, call: Callable[[], Any]) -> Any:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            wait=tenacity.wait_exponential(multiplier=0.5, max=8.0) + tenacity.wait_random(0, 0.25),
            retry=tenacity.retry_if_exception_type(errors.TransientError), sleep=self._sleep, reraise=True)
        return retrying(call)

    def close(self) -> None:
        self._client.close()

    # -- one request ------------------------------------------------------------------------------------------
    def _send(self, request: httpx.Request, *, what: str) -> httpx.Response:
        for _ in range(MAX_REDIRECTS + 1):
            if self._authorization is not None and _origin(request.url) == self._origin:
                request.headers["Authorization"] = self._authorization()
            response = self._client.send(request, stream=True)
            if not response.is_redirect:
                return response
            response.close()
            target = request.url.join(response.headers["location"])
            if target.scheme != "https":
                raise errors.PermanentError(f"{self.repository}: {what} was redirected to plain HTTP; not followed")
            request = self._client.build_request("GET", target)  # a fresh request: no Authorization
        raise errors.PermanentError(f"{self.repository}: {what} was redirected more than {MAX_REDIRECTS} times")

    def _check(self, response: httpx.Response, *, what: str, missing: str, not_found: tuple[int, ...]) -> None:
        status = response.status_code
        if response.is_success and status != 203:
            return
        response.read()
        where = f"{self.repository}: {what} answered HTTP {status}"
        redirected = _origin(response.url) != self._origin
        if redirected:
            where += f" from {response.url.host}"
        detail = _server_message(response)
        if status in not_found and redirected:  # the download link the API gave failed: ask the API again
            raise errors.TransientError(f"{where}{detail}")
        if status in not_found:
            raise errors.NotFound(f"{self.repository}: {missing} (HTTP {status})")
        if status == 429 or (status == 403 and _rate_limited(response)):
            raise errors.TransientError(f"{where}: rate limited{_reset(response)}{detail}")
        if status in (401, 403, 203):
            if self._authorization is None:
                problem = "anonymous access was refused: set a token (SHIPBOT_GIT_TOKEN)"
            elif status == 403:
                problem = "the token lacks read access to the repository's contents"
            else:
                problem = "the token was not accepted (expired, revoked, or for another organization?)"
            raise errors.PermanentError(f"{where}: {problem}{detail}")
        if status == 408 or status >= 500:
            raise errors.TransientError(f"{where}{detail}")
        raise errors.PermanentError(f"{where}, which was not expected{detail}")


# -- names and documents ------------------------------------------------------------------------------------
def require_branch(branch: str) -> str:
    """A branch name GitSource would take (its pattern), else NotFound as there: checked before any request."""
    if not git_source.BRANCH.fullmatch(branch):
        raise errors.NotFound(f"no branch {branch!r}: not a valid branch name")
    return branch


def require_path(path: str, sha: str) -> str:
    """A file's path in a repository as the APIs take it (relative, `/`-separated, no `..`), else NotFound."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or ".." in parts or path.startswith("/") or "\\" in path or "\0" in path or len(path) > 1024:
        raise errors.NotFound(f"commit {sha[:12]} has no file {path[:80]!r}: not a path in the repository")
    return "/".join(parts)


def require_sha(sha: str) -> str:
    """A full commit sha (GitSource's pattern), else NotFound as there: checked before any request."""
    if not git_source.SHA.fullmatch(sha):
        raise errors.NotFound(f"no commit {sha!r}: not a full commit sha")
    return sha


def field(doc: Any, *keys: str, what: str) -> Any:
    """doc[k1][k2]...; a document without it is a PermanentError (the API is not what this adapter speaks)."""
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            raise errors.PermanentError(f"{what} answered a document without {'.'.join(keys)}")
        doc = doc[key]
    return doc


def parse_time(text: Any, *, what: str) -> datetime:
    """An ISO 8601 time from an API (`2026-03-01T12:00:00Z`) as an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", str(text)))
    except ValueError:
        raise errors.PermanentError(f"{what} answered a time that is not ISO 8601: {str(text)[:40]!r}") from None
    if parsed.tzinfo is None:
        raise errors.PermanentError(f"{what} answered a time without a zone: {str(text)[:40]!r}")
    return parsed.astimezone(UTC)


# -- archives -----------------------------------------------------------------------------------------------
def relative_member(name: str, *, what: str) -> str:
    """An archive member's name as a relative path ("" for the archive's root); absolute paths and `..` are a
    PermanentError: retrying will not make the archive safe."""
    if name.startswith("/") or "\0" in name:
        raise errors.PermanentError(f"{what} holds a member with an absolute or invalid path: {name[:100]!r}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise errors.PermanentError(f"{what} holds a member that climbs out with '..': {name[:100]!r}")
    return "/".join(parts)


def extract_tarball(stream: IO[bytes], destination: Path, *, what: str) -> None:
    """Extracts a streamed tar (any compression) whose members all sit in one top directory, as GitHub's
    `owner-repo-<sha7>/`, into `destination` without that directory; read front to back, never held whole."""
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            tar.extractall(destination, members=_without_top_directory(tar, what=what), filter="data")
    except tarfile.FilterError as e:
        raise errors.PermanentError(f"{what} holds an unsafe member: {e}") from None
    except (tarfile.TarError, EOFError, zlib.error) as e:  # truncated or garbled on the way: try again
        raise errors.TransientError(f"{what} is not a readable tar: {type(e).__name__}: {e}") from None


def _without_top_directory(tar: tarfile.TarFile, *, what: str) -> Iterator[tarfile.TarInfo]:
    top = None
    for member in tar:
        head, _, name = relative_member(member.name, what=what).partition("/")
        top = head if top is None else top
        if head != top:
            raise errors.PermanentError(f"{what} holds a member outside its top directory: {member.name[:100]!r}")
        if not name:
            continue
        changes = {"name": name}
        if member.islnk():  # a hard link names another member, top directory included
            changes["linkname"] = relative_member(member.linkname, what=what).partition("/")[2]
        yield member.replace(**changes, deep=False)


def extract_zip(archive: IO[bytes], destination: Path, *, what: str) -> None:
    """Extracts a zip (a seekable file) into `destination`. Unix modes are kept where the zip carries them
    (`git archive` records executables and symlinks so); each member passes tarfile's "data" filter first."""
    root = os.path.realpath(destination)
    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                name = relative_member(info.filename, what=what)
                if name:
                    _extract_zip_member(zipped, info, name, root, what=what)
    except tarfile.FilterError as e:
        raise errors.PermanentError(f"{what} holds an unsafe member: {e}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as e:
        raise errors.TransientError(f"{what} is not a readable zip: {type(e).__name__}: {e}") from None


def _extract_zip_member(zipped: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, root: str, *, what: str) -> None:
    mode = info.external_attr >> 16 if info.create_system == 3 else 0
    member = tarfile.TarInfo(name)
    if info.is_dir():
        member.type, member.mode = tarfile.DIRTYPE, 0o755
    elif stat.S_ISLNK(mode):
        member.type, member.mode = tarfile.SYMTYPE, 0o777
        member.linkname = zipped.read(info)[:MAX_LINK_BYTES].decode("utf-8", "surrogateescape")
    elif stat.S_IFMT(mode) in (0, stat.S_IFREG):  # many zip writers record permission bits only
        member.type, member.mode = tarfile.REGTYPE, (stat.S_IMODE(mode) or 0o644)
    else:
        raise errors.PermanentError(f"{what} holds a member that is not a file, directory or link: {name[:100]!r}")
    safe = tarfile.data_filter(member, root)  # the checks tar extraction gets; raises tarfile.FilterError
    target = Path(root, safe.name)
    if safe.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()  # never write through a link an earlier member (or an earlier attempt) made
    if safe.issym():
        os.symlink(safe.linkname, target)
        return
    with zipped.open(info) as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK_BYTES)
    if safe.mode is not None:
        os.chmod(target, safe.mode)


class ResponseStream(io.RawIOBase):
    """A streaming httpx response as a readable binary file, for tarfile's stream mode."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.iter_bytes(CHUNK_BYTES)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size], self._pending = self._pending[:size], self._pending[size:]
        return size


# -- helpers ------------------------------------------------------------------------------------------------
def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or {"https": 443, "http": 80}.get(url.scheme)


def _rate_limited(response: httpx.Response) -> bool:
    return response.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in response.headers


def _reset(response: httpx.Response) -> str:
    if retry_after := response.headers.get("retry-after", "").strip():
        return f" (retry after {retry_after[:20]} s)"
    reset = response.headers.get("x-ratelimit-reset", "")
    if reset.isdigit():
        return f" until {datetime.fromtimestamp(int(reset), UTC):%H:%M:%S} UTC"
    return ""


def _server_message(response: httpx.Response) -> str:
    """GitHub's and Azure DevOps' error documents both carry a `message`; quoted short, or nothing."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        return ""
    return f" ({' '.join(str(message).split())[:MESSAGE_CHARS]})" if message else ""


# -- keeping signed query tokens out of httpx's request log ("HTTP Request: GET <url> ...", INFO) ---------------
class _RedactQueryTokens(logging.Filter):
    """A private repository's tarball redirect carries a short-lived `?token=...`: httpx would log it whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        return True


def _redacted(arg: Any) -> Any:
    if isinstance(arg, httpx.URL) and "token" in arg.query.decode("ascii", "replace").lower():
        return f"{arg.copy_with(query=None)}?***"
    return arg


_filter = _RedactQueryTokens()


def _redact_query_tokens_from_httpx_logs() -> None:
    logger = logging.getLogger("httpx")
    if _filter not in logger.filters:
        logger.addFilter(_filter)
