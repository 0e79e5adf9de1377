"""What the fakes of GitHub's and Azure Repos' REST APIs (tests/fakes/github_api.py, azure_repos_api.py) share:
a REAL git repository read with real git, and an HTTPS request handler (tests/fakes/selfsigned.py) that records
every request, answers JSON or bytes over HTTP/1.1, and can be told to fail the next requests.

A fake is started with `with Fake(repo, directory=tmp_path) as fake:`; its servers run in threads until the
block ends. `fake.requests` lists every request (Recorded), in order, from every server of the fake.
"""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.parse
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self

from tests.fakes import selfsigned

GIT_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}


@dataclass(frozen=True)
class Recorded:
    server: str                # which of the fake's servers: "api", "codeload"
    method: str
    path: str                  # percent-decoded, without the query
    target: str                # the request target as sent: path and query, still percent-encoded
    query: dict[str, str]
    headers: dict[str, str]    # lower-cased names


class GitRepo:
    """Reads a repository with real git, as the hosting service's own backend does."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def git(self, *args: str) -> bytes:
        return subprocess.run(["git", "-C", str(self.path), *args], check=True, capture_output=True,
                              env=GIT_ENV).stdout

    def resolve(self, revision: str) -> str | None:
        """The commit a full sha or `refs/heads/<branch>` names, None if none."""
        found = subprocess.run(["git", "-C", str(self.path), "rev-parse", "--verify", "--quiet", "--end-of-options",
                                f"{revision}^{{commit}}"], check=False, capture_output=True, env=GIT_ENV)
        return found.stdout.decode().strip() if found.returncode == 0 else None

    def heads(self) -> dict[str, str]:
        """refs/heads/<name> -> sha, every branch."""
        lines = self.git("for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/").decode().splitlines()
        return dict(line.split(" ", 1) for line in lines)

    def commit(self, sha: str) -> dict[str, Any]:
        """tree, parents, message and both signatures (dates in UTC, `Z`, as both APIs write them)."""
        fields = self.git("show", "-s", "--format=%T%n%P%n%an%n%ae%n%aI%n%cn%n%ce%n%cI%n%B", sha, "--").decode()
        tree, parents, an, ae, ad, cn, ce, cd, message = fields.split("\n", 8)
        return {"tree": tree, "parents": parents.split(), "message": message.rstrip("\n"),
                "author": {"name": an, "email": ae, "date": _utc(ad)},
                "committer": {"name": cn, "email": ce, "date": _utc(cd)}}

    def archive(self, sha: str, *, format: str, prefix: str = "") -> bytes:
        return self.git("archive", f"--format={format}", f"--prefix={prefix}", sha)

    def entry(self, sha: str, path: str) -> tuple[str, str, int] | None:
        """(blob | tree, object id, size) of `path` at `sha`, as `git ls-tree -l` says; None if it has none."""
        found = subprocess.run(["git", "-C", str(self.path), "ls-tree", "-l", "--full-tree", sha, "--", path],
                               check=False, capture_output=True, env=GIT_ENV)
        fields = found.stdout.decode().split(maxsplit=4) if found.returncode == 0 else []
        if len(fields) < 5 or fields[4].rstrip("\n") != path.strip("/"):
            return None
        return fields[1], fields[2], int(fields[3]) if fields[3].isdigit() else 0

    def blob(self, object_id: str) -> bytes:
        return self.git("cat-file", "blob", object_id)


class Handler(BaseHTTPRequestHandler):
    """Records the request, then gives it to `self.server.fake.answer(self, server_name, path, query)`."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        fake, name = self.server.fake, self.server.name
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake.requests.append(Recorded(name, "GET", path, self.path, query, headers))
        failure = fake.take_failure() if name == "api" else None
        if failure is not None:
            status, headers, body = failure
            self.send_json(status, body, headers)
            return
        fake.answer(self, name, path, query)

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(body).encode(), "application/json; charset=utf-8", headers)

    def send_bytes(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Fake:
    """The servers' lifecycle, the request record, and failure injection. `fail_next` holds what the next API
    requests answer instead of their real answer: (status, headers, JSON body), the first one first."""

    servers: tuple[str, ...] = ("api",)

    def __init__(self, repo: Path, *, directory: Path) -> None:
        self.repo = GitRepo(repo)
        self.requests: list[Recorded] = []
        self.fail_next: list[tuple[int, dict[str, str], Any]] = []
        self.archive_override: bytes | None = None  # served instead of `git archive` (a crafted archive)
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self.ca_file, self._key_file = selfsigned.make_certificate(directory)
        self.urls: dict[str, str] = {}

    def __enter__(self) -> Self:
        for name in self.servers:
            server = self._stack.enter_context(selfsigned.https_server(Handler, self.ca_file, self._key_file,
                                                                       fake=self, name=name))
            self.urls[name] = f"https://127.0.0.1:{server.server_address[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def take_failure(self) -> tuple[int, dict[str, str], Any] | None:
        with self._lock:
            return self.fail_next.pop(0) if self.fail_next else None

    def answer(self, handler: Handler, server: str, path: str, query: dict[str, str]) -> None:
        raise NotImplementedError

    def archive(self, sha: str, *, format: str, prefix: str = "") -> bytes:
        return self.archive_override if self.archive_override is not None else \
            self.repo.archive(sha, format=format, prefix=prefix)

    def requests_to(self, server: str) -> list[Recorded]:
        return [r for r in self.requests if r.server == server]


def _utc(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
