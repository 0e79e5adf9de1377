"""GitHubSource: the application's repository on github.com or a GitHub Enterprise Server, read through GitHub's
REST API (version 2022-11-28) instead of a checkout (ports.Source). Used when SHIPBOT_GIT_REPO is a GitHub https
URL; GitSource serves a local checkout.

    get_head(branch)      GET /repos/{owner}/{repo}/branches/{branch}    commit.sha, commit.commit.committer.date
    get_commit(sha)       GET /repos/{owner}/{repo}/commits/{sha}        404, or 422 "No commit found for SHA"
    read_file(sha, path)  GET /repos/{owner}/{repo}/contents/{path}?ref=  the entry (type, size), then the same
                                                                         URL as application/vnd.github.raw+json
    archive(sha, dir)     GET /repos/{owner}/{repo}/tarball/{sha}        302 to codeload (another host), which
                                                                         serves `git archive` as tar.gz under
                                                                         one directory, `owner-repo-<sha7>/`

Branch names and shas are checked with GitSource's patterns before any request (an invalid one is NotFound, as
there) and the branch is percent-quoted into the path. `archive` asks for the commit first (NotFound before
anything is written), then streams the tarball into tar extraction without its top directory, so the
destination holds what GitSource's `git archive` writes; nothing is held whole in memory. get_commit answers
branch "": GitHub has no cheap "which branch holds this commit", and the engine does not need it.

Auth: `token`, a fine-grained personal access token or a GitHub App installation token with Contents: read,
sent as `Authorization: Bearer` to the API's origin only (hosted_git.Api: codeload gets the redirect's own
short-lived query token, never ours, and httpx's log line for it is redacted). No token: anonymous, which
reads public repositories (60 requests an hour) and sees a private one as 404. The token never appears in a
message, a repr or Commit.source_url. Errors and retries: hosted_git.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from shared import errors
from shared.adapters.azure import hosted_git
from shared.adapters.local import git_source
from shared.releases import Commit

API_VERSION = "2022-11-28"
GITHUB_COM = "github.com"
GITHUB_COM_API = "https://api.github.com"
OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")  # a user or organization login
NAME = re.compile(r"(?!\.\.?$)[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True, slots=True)
class Repository:
    host: str   # github.com, or a GitHub Enterprise Server's host[:port]
    owner: str
    name: str

    @property
    def source_url(self) -> str:
        return f"https://{self.host}/{self.owner}/{self.name}"

    @property
    def api_url(self) -> str:
        return GITHUB_COM_API if self.host.lower() == GITHUB_COM else f"https://{self.host}/api/v3"


def parse_repository_url(url: str) -> Repository:
    """`https://github.com/owner/repo[.git][/]` (or another host: GitHub Enterprise Server) -> Repository. A user
    name in the URL is dropped; a password (a token) is refused, and no message quotes the URL as given."""
    parts = urlsplit(url.strip())
    shown = f"https://{parts.hostname or ''}{parts.path}"
    if parts.scheme != "https" or not parts.hostname:
        raise errors.PermanentError(f"a GitHub repository URL is https://github.com/<owner>/<repo>, not {shown!r}")
    if parts.password:
        raise errors.PermanentError("the GitHub repository URL carries a password or token: put the token in "
                                    "SHIPBOT_GIT_TOKEN and the URL without it in SHIPBOT_GIT_REPO")
    if parts.query or parts.fragment:
        raise errors.PermanentError(f"the GitHub repository URL {shown!r} must not have a query or fragment")
    segments = parts.path.strip("/").split("/")
    name = segments[-1].removesuffix(".git") if segments else ""
    if len(segments) != 2 or not OWNER.fullmatch(segments[0]) or not NAME.fullmatch(name):
        raise errors.PermanentError(f"a GitHub repository URL is https://<host>/<owner>/<repo>, not {shown!r}")
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return Repository(host=host, owner=segments[0], name=name)


class GitHubSource:
    def __init__(self, *, repository_url: str, token: str = "", api_url: str | None = None,
                 timeout_seconds: float = 60.0, verify: bool | str = True,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`api_url` defaults to https://api.github.com for github.com and https://<host>/api/v3 for another host.
        `verify` goes to httpx: False, or a CA bundle's path (tests trust their fake's certificate so).
        `timeout_seconds` bounds each connect and each read, not a whole download."""
        self.repository = parse_repository_url(repository_url)
        self.source_url = self.repository.source_url
        self._path = f"/repos/{self.repository.owner}/{self.repository.name}"
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": "shipbot"}
        self._api = hosted_git.Api(
            api_url=api_url or self.repository.api_url,
            repository=f"GitHub {self.repository.owner}/{self.repository.name}", headers=headers,
            authorization=(lambda: f"Bearer {token}") if token else None, timeout_seconds=timeout_seconds,
            verify=verify, sleep=sleep)

    def __repr__(self) -> str:
        return f"GitHubSource(repository_url={self.source_url!r}, api_url={self._api.api_url!r})"

    def get_head(self, branch: str) -> Commit:
        hosted_git.require_branch(branch)
        what = f"branch {branch}"
        doc = self._api.get_json(f"{self._path}/branches/{quote(branch, safe='')}", what=what,
                                 missing=f"no branch {branch} (or the token cannot see the repository)")
        return self._commit(hosted_git.field(doc, "commit", what=what), branch=branch, what=what)

    def get_commit(self, sha: str) -> Commit:
        hosted_git.require_sha(sha)
        what = f"commit {sha}"
        doc = self._api.get_json(f"{self._path}/commits/{sha}", what=what, not_found=(404, 422),
                                 missing=f"no commit {sha}")
        return self._commit(doc, branch="", what=what)

    def archive(self, sha: str, destination: Path) -> None:
        """Writes the tree at `sha` into `destination` (created if missing)."""
        self.get_commit(sha)
        destination.mkdir(parents=True, exist_ok=True)
        what = f"tarball of {sha}"

        def download() -> None:
            with self._api.open(f"{self._path}/tarball/{sha}", what=what, missing=f"no commit {sha}") as response:
                hosted_git.extract_tarball(hosted_git.ResponseStream(response), destination,
                                           what=f"{self._api.repository}: the {what}")

        self._api.retry(download)

    def read_file(self, sha: str, path: str, *, max_bytes: int) -> bytes:
        """One file at `sha` (the quality gate's data set): its entry in the contents API says it is a file and
        how large, then the raw media type streams its bytes (files up to 100 MB; no archive)."""
        hosted_git.require_sha(sha)
        rel = hosted_git.require_path(path, sha)
        url, params = f"{self._path}/contents/{quote(rel)}", {"ref": sha}
        what, missing = f"{rel} at {sha[:12]}", f"commit {sha[:12]} has no file {rel}"
        entry = self._api.get_json(url, params=params, what=what, missing=missing, not_found=(404, 422))
        if not isinstance(entry, dict) or entry.get("type") != "file":  # a folder answers a list
            raise errors.NotFound(missing)
        size = entry.get("size")
        if isinstance(size, int) and size > max_bytes:
            raise errors.PermanentError(f"{rel} at {sha[:12]} takes {size:,} bytes, more than {max_bytes:,}")
        return self._api.get_bytes(url, params=params, headers={"Accept": "application/vnd.github.raw+json"},
                                   what=what, missing=missing, max_bytes=max_bytes)

    def close(self) -> None:
        self._api.close()

    def _commit(self, doc: object, *, branch: str, what: str) -> Commit:
        where = f"{self._api.repository}: {what}"
        sha = hosted_git.field(doc, "sha", what=where)
        if not isinstance(sha, str) or not git_source.SHA.fullmatch(sha):
            raise errors.PermanentError(f"{where} answered a commit without a full sha")
        committed = hosted_git.parse_time(hosted_git.field(doc, "commit", "committer", "date", what=where), what=where)
        return Commit(sha=sha, branch=branch, committed=committed, source_url=self.source_url)
