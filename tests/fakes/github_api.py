"""A fake of GitHub's REST API (api.github.com, version 2022-11-28) and of codeload.github.com, serving a REAL
git repository, for GitHubSource. Two HTTPS servers on 127.0.0.1 (tests/fakes/selfsigned.py), because the
tarball endpoint redirects to another host and the test must see what reaches that host.

API server (`fake.api_url`), for the one repository `{owner}/{name}`:
    GET /repos/{owner}/{name}/branches/{branch}  200 a branch object: name, commit {sha, node_id, commit {author,
                                                 committer {name, email, date}, message, tree, url,
                                                 comment_count}, url, html_url, parents}, _links, protected
    GET /repos/{owner}/{name}/commits/{sha}      200 a commit object: sha, node_id, commit {...}, url, html_url,
                                                 author, committer, parents, stats, files;
                                                 422 {"message": "No commit found for SHA: {sha}"} for a
                                                 well-formed id that is no commit
    GET /repos/{owner}/{name}/contents/{path}?ref={sha}   200 a file's entry {type, size, ...} (a folder: a
                                                 list); with Accept: application/vnd.github.raw+json its bytes
    GET /repos/{owner}/{name}/tarball/{ref}      302, Location: {codeload}/{owner}/{name}/legacy.tar.gz/{sha}
                                                 ?token=<short-lived>, as for a private repository
    anything else, or an unknown branch          404 {"message": "Not Found", "documentation_url": ..., "status"}
Auth as GitHub treats a private repository: `Authorization: Bearer <token>` (or `token <token>`) with the
right token passes; another token is 401 {"message": "Bad credentials"}; none is 404 (a private repository is
invisible). Every answer carries x-ratelimit-* headers. `fail_next` (git_hosting.Fake) injects answers, e.g.
RATE_LIMITED or SERVER_ERROR.

Codeload server: GET /{owner}/{name}/legacy.tar.gz/{sha}?token=... serves `git archive --format=tar.gz
--prefix={owner}-{name}-{sha7}/ {sha}` (what GitHub's tarballs are) as application/x-gzip; a token it did not
issue, or any token once `links_expire` is set, is 404. It ignores Authorization, as codeload does: tests check
that none reaches it.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tests.fakes import git_hosting

DOCS = "https://docs.github.com/rest"
NOT_FOUND = {"message": "Not Found", "documentation_url": DOCS, "status": "404"}
SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
RATE_LIMITED = (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) + 600)},
                {"message": "API rate limit exceeded for user ID 1.", "status": "403",
                 "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api"})
SERVER_ERROR = (500, {}, {"message": "Server Error"})
FORBIDDEN = (403, {}, {"message": "Resource not accessible by personal access token", "status": "403",
                       "documentation_url": f"{DOCS}/repos/contents"})


class FakeGitHub(git_hosting.Fake):
    servers = ("api", "codeload")

    def __init__(self, repo: Path, *, directory: Path, owner: str = "octo-org", name: str = "app",
                 token: str = "ghp-test-token-0123456789") -> None:
        super().__init__(repo, directory=directory)
        self.owner, self.name, self.token = owner, name, token
        self.repository_url = f"https://github.com/{owner}/{name}"
        self.codeload_tokens: set[str] = set()  # the short-lived tokens the tarball redirects carried
        self.links_expire = False  # True: codeload refuses every token, as once a link's few minutes are up

    @property
    def api_url(self) -> str:
        return self.urls["api"]

    def answer(self, handler: git_hosting.Handler, server: str, path: str, query: dict[str, str]) -> None:
        if server == "codeload":
            self._codeload(handler, path, query)
            return
        denied = self._authenticate(handler.headers.get("Authorization"))
        if denied is not None:
            handler.send_json(*denied, headers=self._rate_headers())
            return
        prefix = f"/repos/{self.owner}/{self.name}/"
        kind, _, rest = path.removeprefix(prefix).partition("/") if path.startswith(prefix) else ("", "", "")
        if kind == "branches" and rest:
            sha = self.repo.resolve(f"refs/heads/{rest}")
            if sha is None:
                handler.send_json(404, {**NOT_FOUND, "message": "Branch not found"}, self._rate_headers())
                return
            handler.send_json(200, self._branch(rest, sha), self._rate_headers())
        elif kind == "commits" and rest:
            sha = self.repo.resolve(rest) if SHA.fullmatch(rest) else None
            if sha is None:
                handler.send_json(422, {"message": f"No commit found for SHA: {rest}", "status": "422",
                                        "documentation_url": f"{DOCS}/commits/commits#get-a-commit"},
                                  self._rate_headers())
                return
            handler.send_json(200, self._commit(sha), self._rate_headers())
        elif kind == "contents" and rest:
            self._contents(handler, unquote(rest), query.get("ref", ""))
        elif kind == "tarball" and rest:
            sha = self.repo.resolve(rest) if SHA.fullmatch(rest) else self.repo.resolve(f"refs/heads/{rest}")
            if sha is None:
                handler.send_json(404, NOT_FOUND, self._rate_headers())
                return
            token = secrets.token_urlsafe(16)
            self.codeload_tokens.add(token)
            location = f"{self.urls['codeload']}/{self.owner}/{self.name}/legacy.tar.gz/{sha}?token={token}"
            handler.send_bytes(302, b"", "text/html;charset=utf-8", {"Location": location, **self._rate_headers()})
        else:
            handler.send_json(404, NOT_FOUND, self._rate_headers())

    # -- pieces ---------------------------------------------------------------------------------------------
    def _contents(self, handler: git_hosting.Handler, path: str, ref: str) -> None:
        """A file's entry (JSON), or its bytes with the raw media type; a folder's listing; 404 otherwise."""
        sha = self.repo.resolve(ref) if SHA.fullmatch(ref) else None
        if sha is None:
            handler.send_json(404, {**NOT_FOUND, "message": f"No commit found for the ref {ref}"},
                              self._rate_headers())
            return
        entry = self.repo.entry(sha, path)
        if entry is None:
            handler.send_json(404, NOT_FOUND, self._rate_headers())
        elif entry[0] == "tree":
            handler.send_json(200, [], self._rate_headers())  # a folder: its entries (none listed here)
        elif handler.headers.get("Accept") == "application/vnd.github.raw+json":
            handler.send_bytes(200, self.repo.blob(entry[1]), "application/vnd.github.raw", self._rate_headers())
        else:
            handler.send_json(200, {"type": "file", "encoding": "base64", "size": entry[2],
                                    "name": path.rsplit("/", 1)[-1], "path": path, "sha": entry[1]},
                              self._rate_headers())

    def _authenticate(self, header: str | None) -> tuple[int, Any] | None:
        if not self.token:
            return None
        if header is None:
            return 404, NOT_FOUND
        scheme, _, value = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or value != self.token:
            return 401, {"message": "Bad credentials", "documentation_url": DOCS, "status": "401"}
        return None

    def _codeload(self, handler: git_hosting.Handler, path: str, query: dict[str, str]) -> None:
        match = re.fullmatch(rf"/{re.escape(self.owner)}/{re.escape(self.name)}/legacy\.tar\.gz/([0-9a-f]+)", path)
        if match is None or query.get("token") not in self.codeload_tokens or self.links_expire:
            handler.send_bytes(404, b"404: Not Found", "text/plain; charset=utf-8")
            return
        sha = match.group(1)
        top = f"{self.owner}-{self.name}-{sha[:7]}"
        handler.send_bytes(200, self.archive(sha, format="tar.gz", prefix=f"{top}/"), "application/x-gzip",
                           {"Content-Disposition": f"attachment; filename={top}.tar.gz"})

    def _rate_headers(self) -> dict[str, str]:
        return {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999", "x-ratelimit-used": "1",
                "x-ratelimit-reset": str(int(time.time()) + 3600), "x-ratelimit-resource": "core",
                "x-github-api-version-selected": "2022-11-28"}

    def _commit_core(self, sha: str) -> dict[str, Any]:
        info = self.repo.commit(sha)
        api = f"{self.api_url}/repos/{self.owner}/{self.name}"
        return {
            "sha": sha, "node_id": f"C_{sha[:20]}", "url": f"{api}/commits/{sha}",
            "html_url": f"https://github.com/{self.owner}/{self.name}/commit/{sha}",
            "commit": {"author": info["author"], "committer": info["committer"], "message": info["message"],
                       "tree": {"sha": info["tree"], "url": f"{api}/git/trees/{info['tree']}"},
                       "url": f"{api}/git/commits/{sha}", "comment_count": 0,
                       "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None}},
            "author": None, "committer": None,
            "parents": [{"sha": p, "url": f"{api}/commits/{p}",
                         "html_url": f"https://github.com/{self.owner}/{self.name}/commit/{p}"}
                        for p in info["parents"]],
        }

    def _branch(self, branch: str, sha: str) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{self.owner}/{self.name}"
        return {"name": branch, "commit": self._commit_core(sha),
                "_links": {"self": f"{api}/branches/{branch}",
                           "html": f"https://github.com/{self.owner}/{self.name}/tree/{branch}"},
                "protected": False, "protection": {"enabled": False, "required_status_checks": {
                    "enforcement_level": "off", "contexts": [], "checks": []}},
                "protection_url": f"{api}/branches/{branch}/protection"}

    def _commit(self, sha: str) -> dict[str, Any]:
        return {**self._commit_core(sha), "stats": {"total": 0, "additions": 0, "deletions": 0}, "files": []}
