"""A fake of the Azure DevOps Services Git REST API (dev.azure.com, api-version 7.1) serving a REAL git
repository, for AzureReposSource. One HTTPS server on 127.0.0.1 (tests/fakes/selfsigned.py); `fake.api_url`
stands for https://dev.azure.com/{organization}. Under /{organization}/{project}/_apis/git/repositories/{name}
(project and repository names compared case-insensitively, as Azure DevOps does; a project may have spaces):

    GET refs?filter=heads/{prefix}&api-version=7.1     200 {"value": [{"name": "refs/heads/...", "objectId",
                                                       "creator", "url"}], "count"}: every branch whose name
                                                       starts with the prefix (filter is a prefix match)
    GET commits/{id}?api-version=7.1                   200 a GitCommit: commitId, treeId, parents, author and
                                                       committer {name, email, date}, comment, url, remoteUrl,
                                                       _links; 404 for an id that is no commit
    GET items?path=/{path}&versionDescriptor...&$format=json|octetStream   an item's metadata (objectId,
                                                 gitObjectType, isFolder for a folder), or a blob's bytes
    GET items?path=/&versionDescriptor.version={sha}&versionDescriptor.versionType=commit&$format=zip
        &download=true&api-version=7.1                 200 application/zip: `git archive --format=zip {sha}`,
                                                       members at the zip's root (no top folder); 404 as above
    another repository                                 404 TF401019 (GitRepositoryNotFoundException)
    api-version missing or not 7.1                     400
Auth: HTTP Basic whose password is `token` (any user name, as for a PAT), or `Bearer <t>` for t in
`bearer_tokens` (Entra ID); a wrong credential is 401; none is 203 with an HTML sign-in page, which is how
Azure DevOps answers an anonymous call to a private organization. Error bodies are Azure DevOps' exception
documents ({"$id", "innerException", "message", "typeName", "typeKey", "errorCode", "eventId"}); their exact
message texts are this fake's, from memory of the service, not checked against it. `fail_next`
(git_hosting.Fake) injects answers, e.g. RATE_LIMITED (429 with Retry-After, Azure DevOps' throttling) or
SERVER_ERROR.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.fakes import git_hosting

SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
SERVER_ERROR = (500, {}, {"$id": "1", "message": "VS800075: The service is temporarily unavailable.",
                          "typeKey": "ServiceUnavailableException", "errorCode": 0, "eventId": 3000})
RATE_LIMITED = (429, {"Retry-After": "1", "X-RateLimit-Resource": "ATCPU", "X-RateLimit-Remaining": "0"},
                {"$id": "1", "message": "TF400733: The request has been canceled: Request was blocked due to "
                 "exceeding usage of resource 'ATCPU' in namespace 'User'.", "typeKey": "RequestBlockedException",
                 "errorCode": 0, "eventId": 3000})
SIGN_IN_PAGE = b"<html><head><title>Azure DevOps Services | Sign In</title></head><body>Sign in</body></html>"


def error(message: str, type_key: str) -> dict[str, Any]:
    return {"$id": "1", "innerException": None, "message": message,
            "typeName": f"Microsoft.TeamFoundation.Git.Server.{type_key}, Microsoft.TeamFoundation.Git.Server",
            "typeKey": type_key, "errorCode": 0, "eventId": 3000}


class FakeAzureRepos(git_hosting.Fake):
    def __init__(self, repo: Path, *, directory: Path, organization: str = "contoso", project: str = "Shop App",
                 name: str = "app", token: str = "azdo-test-pat-0123456789", bearer_tokens: set[str] | None = None
                 ) -> None:
        super().__init__(repo, directory=directory)
        self.organization, self.project, self.name = organization, project, name
        self.token, self.bearer_tokens = token, set(bearer_tokens or ())
        self.repository_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{organization}/{project}/{name}"))
        self.repository_url = f"https://dev.azure.com/{organization}/{quote(project)}/_git/{quote(name)}"

    @property
    def api_url(self) -> str:
        return f"{self.urls['api']}/{self.organization}"

    def answer(self, handler: git_hosting.Handler, server: str, path: str, query: dict[str, str]) -> None:
        denied = self._authenticate(handler.headers.get("Authorization"))
        if denied is not None:
            status, body = denied
            handler.send_bytes(status, body, "text/html; charset=utf-8")
            return
        match = re.fullmatch(rf"/{re.escape(self.organization)}/([^/]+)/_apis/git/repositories/([^/]+)/"
                             r"(refs|commits/([^/]+)|items)", path)
        if match is None or (match[1].lower(), match[2].lower()) != (self.project.lower(), self.name.lower()):
            handler.send_json(404, error(f"TF401019: The Git repository with name or identifier "
                                         f"{match[2] if match else '?'} does not exist or you do not have "
                                         "permissions for the operation you are attempting.",
                                         "GitRepositoryNotFoundException"))
            return
        if query.get("api-version") != "7.1":
            handler.send_json(400, {"$id": "1", "message": "The requested REST API version is out of range "
                                    "or was not given; this fake speaks 7.1.", "typeKey":
                                    "VssVersionOutOfRangeException", "errorCode": 0, "eventId": 3000})
            return
        if match[3] == "refs":
            self._refs(handler, query.get("filter", ""))
            return
        sha = match[4] if match[4] is not None else query.get("versionDescriptor.version", "")
        resolved = self.repo.resolve(sha) if SHA.fullmatch(sha) else None
        if resolved is None:
            handler.send_json(404, error(f"TF401175:The version descriptor <Commit: {sha}> could not be resolved "
                                         f"to a version on the repository {self.name}",
                                         "GitUnresolvableToCommitException"))
        elif match[4] is not None:
            handler.send_json(200, self._commit(resolved))
        elif query.get("$format") in ("json", "octetStream") and query.get("path", "/") != "/" and \
                query.get("versionDescriptor.versionType") == "commit":
            self._item(handler, resolved, query["path"], raw=query["$format"] == "octetStream")
        elif query.get("$format") == "zip" and query.get("path") == "/" and \
                query.get("versionDescriptor.versionType") == "commit":
            handler.send_bytes(200, self.archive(resolved, format="zip"), "application/zip",
                               {"Content-Disposition": f"attachment; filename={self.name}.zip; "
                                                       f"filename*=utf-8''{self.name}.zip"})
        else:
            handler.send_json(400, error("this fake serves items only as a zip of / at a commit",
                                         "InvalidArgumentValueException"))

    # -- pieces ---------------------------------------------------------------------------------------------
    def _item(self, handler: git_hosting.Handler, sha: str, path: str, *, raw: bool) -> None:
        entry = self.repo.entry(sha, path.lstrip("/"))
        if entry is None:
            handler.send_json(404, error(f"TF401174: The item '{path}' could not be found in the repository "
                                         f"'{self.name}' at the version specified by '<Commit: {sha}>'",
                                         "GitItemNotFoundException"))
        elif raw and entry[0] == "blob":
            handler.send_bytes(200, self.repo.blob(entry[1]), "application/octet-stream")
        else:
            item = {"objectId": entry[1], "gitObjectType": entry[0], "commitId": sha, "path": path,
                    "url": f"{self._url()}/items?path={path}"}
            handler.send_json(200, {**item, "isFolder": True} if entry[0] == "tree" else item)

    def _authenticate(self, header: str | None) -> tuple[int, bytes] | None:
        if not self.token and not self.bearer_tokens:
            return None
        if header is None:
            return 203, SIGN_IN_PAGE
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value in self.bearer_tokens:
            return None
        if scheme.lower() == "basic" and self.token:
            try:
                _, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                password = ""
            if password == self.token:
                return None
        return 401, b"<html><body>Access Denied: The Personal Access Token used is invalid.</body></html>"

    def _url(self) -> str:
        return f"{self.api_url}/{quote(self.project)}/_apis/git/repositories/{self.repository_id}"

    def _refs(self, handler: git_hosting.Handler, prefix: str) -> None:
        refs = [{"name": ref, "objectId": sha, "url": f"{self._url()}/refs?filter={quote(ref[5:])}",
                 "creator": {"displayName": "Test User", "id": str(uuid.UUID(int=1))}}
                for ref, sha in sorted(self.repo.heads().items()) if ref.startswith(f"refs/{prefix}")]
        handler.send_json(200, {"value": refs, "count": len(refs)})

    def _commit(self, sha: str) -> dict[str, Any]:
        info = self.repo.commit(sha)
        url = f"{self._url()}/commits/{sha}"
        return {"treeId": info["tree"], "commitId": sha, "parents": info["parents"], "comment": info["message"],
                "author": info["author"], "committer": info["committer"], "url": url,
                "remoteUrl": f"{self.repository_url}/commit/{sha}",
                "_links": {"self": {"href": url}, "repository": {"href": self._url()},
                           "web": {"href": f"{self.repository_url}/commit/{sha}"},
                           "tree": {"href": f"{self._url()}/trees/{info['tree']}"}},
                "push": None}
