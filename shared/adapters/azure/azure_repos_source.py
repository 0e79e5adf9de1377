"""AzureReposSource: the application's repository in Azure Repos (Azure DevOps Services), read through the Git
REST API, api-version 7.1, instead of a checkout (ports.Source). Used when SHIPBOT_GIT_REPO is an Azure Repos
https URL; GitSource serves a local checkout. Under {api}/{project}/_apis/git/repositories/{repo}:

    get_head(branch)      GET refs?filter=heads/{branch}      a prefix match: the exact refs/heads/{branch} is
                                                              picked from `value`, its objectId is the head;
                          GET commits/{objectId}              committer.date
    get_commit(sha)       GET commits/{sha}                   404 -> NotFound
    archive(sha, dir)     GET items?path=/&versionDescriptor.version={sha}&versionDescriptor.versionType=commit
                              &$format=zip&download=true      the tree as a zip, its members at the root
    read_file(sha, path)  GET items?path=/{path}&...&$format=json         the item: a blob, not a folder;
                          GET items?path=/{path}&...&$format=octetStream  its bytes

Branch names and shas are checked with GitSource's patterns before any request. `archive` asks for the commit
first (NotFound before anything is written), then spools the zip to a temporary file (a zip is read from its
end, so it cannot be extracted as it streams) and extracts it safely (hosted_git.extract_zip); a download or
zip that breaks is fetched again, as a whole. get_commit
answers branch "", as GitHubSource does.

Auth, one of:
  token        a personal access token with Code (Read): HTTP Basic with an empty user name.
  credential   an azure.core TokenCredential (the Function App's managed identity, added to the organization
               as a user with Basic access and Reader on the repository): Entra ID bearer tokens for Azure
               DevOps (AZURE_DEVOPS_SCOPE), asked for again shortly before they expire (credentials.CachedToken).
  neither      anonymous: a public project only.
Azure DevOps answers a credential it does not accept with 401, or with 203 and a sign-in page: both are a
PermanentError. Nothing here logs or repeats a token. Errors and retries: hosted_git.
"""

from __future__ import annotations

import base64
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from azure.core.credentials import TokenCredential

from shared import errors
from shared.adapters.azure import credentials, hosted_git
from shared.adapters.local import git_source
from shared.releases import Commit

API_VERSION = "7.1"
AZURE_DEVOPS_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"  # the Azure DevOps resource, every cloud
ORGANIZATION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,48}[A-Za-z0-9])?")
FORMS = ("https://dev.azure.com/<organization>/<project>/_git/<repository> or "
         "https://<organization>.visualstudio.com/<project>/_git/<repository>")


@dataclass(frozen=True, slots=True)
class Repository:
    organization: str
    project: str     # as named, unquoted ("Shop App")
    name: str

    @property
    def source_url(self) -> str:
        return f"https://dev.azure.com/{self.organization}/{_quote(self.project)}/_git/{_quote(self.name)}"

    @property
    def api_url(self) -> str:
        return f"https://dev.azure.com/{self.organization}"


def parse_repository_url(url: str) -> Repository:
    """The clone URL Azure Repos shows, with or without its `organization@` user part (dropped), in either host
    form; `DefaultCollection/` of old visualstudio.com URLs is allowed. A password (a PAT) in the URL is refused,
    and no message quotes the URL as given."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    shown = f"https://{host}{parts.path}"
    if parts.password:
        raise errors.PermanentError("the Azure Repos URL carries a password or token: put the PAT in "
                                    "SHIPBOT_GIT_TOKEN and the URL without it in SHIPBOT_GIT_REPO")
    segments = [unquote(s) for s in parts.path.strip("/").split("/")]
    if host == "dev.azure.com" and segments:
        organization, segments = segments[0], segments[1:]
    elif host.endswith(".visualstudio.com"):
        organization = host.removesuffix(".visualstudio.com")
        segments = segments[1:] if segments[:1] == ["DefaultCollection"] else segments
    else:
        organization = ""
    if parts.scheme != "https" or parts.query or parts.fragment or not ORGANIZATION.fullmatch(organization) \
            or len(segments) != 3 or segments[1] != "_git" or not all(map(_valid_name, (segments[0], segments[2]))):
        raise errors.PermanentError(f"an Azure Repos URL is {FORMS}; not {shown!r}")
    return Repository(organization=organization, project=segments[0], name=segments[2])


class AzureReposSource:
    def __init__(self, *, repository_url: str, token: str = "", credential: TokenCredential | None = None,
                 api_url: str | None = None, timeout_seconds: float = 60.0, verify: bool | str = True,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`token` (a PAT) or `credential`, not both. `api_url` defaults to https://dev.azure.com/<organization>.
        `verify` goes to httpx: False, or a CA bundle's path. `timeout_seconds` bounds each connect and read."""
        if token and credential is not None:
            raise ValueError("give AzureReposSource a token or a credential, not both")
        self.repository = parse_repository_url(repository_url)
        self.source_url = self.repository.source_url
        self._path = f"/{_quote(self.repository.project)}/_apis/git/repositories/{_quote(self.repository.name)}"
        repository = self.repository
        self._api = hosted_git.Api(
            api_url=api_url or repository.api_url,
            repository=f"Azure Repos {repository.organization}/{repository.project}/{repository.name}",
            headers={"Accept": "application/json", "User-Agent": "shipbot"},
            authorization=_authorization(token, credential), timeout_seconds=timeout_seconds, verify=verify,
            sleep=sleep)

    def __repr__(self) -> str:
        return f"AzureReposSource(repository_url={self.source_url!r}, api_url={self._api.api_url!r})"

    def get_head(self, branch: str) -> Commit:
        hosted_git.require_branch(branch)
        what = f"refs of branch {branch}"
        doc = self._api.get_json(f"{self._path}/refs", params={"filter": f"heads/{branch}", "api-version": API_VERSION},
                                 what=what, missing="no such repository (or the token cannot see it)")
        refs = hosted_git.field(doc, "value", what=f"{self._api.repository}: {what}")
        exact = [ref for ref in refs if isinstance(ref, dict) and ref.get("name") == f"refs/heads/{branch}"] \
            if isinstance(refs, list) else []  # the filter is a prefix match: release also finds release-2
        if not exact:
            raise errors.NotFound(f"{self._api.repository}: no branch {branch}")
        sha = exact[0].get("objectId")
        if not isinstance(sha, str) or not git_source.SHA.fullmatch(sha):
            raise errors.PermanentError(f"{self._api.repository}: branch {branch} points at no full sha")
        return self._commit(sha, branch=branch)

    def get_commit(self, sha: str) -> Commit:
        return self._commit(hosted_git.require_sha(sha), branch="")

    def archive(self, sha: str, destination: Path) -> None:
        """Writes the tree at `sha` into `destination` (created if missing)."""
        self.get_commit(sha)
        destination.mkdir(parents=True, exist_ok=True)
        params = {"path": "/", "versionDescriptor.version": sha, "versionDescriptor.versionType": "commit",
                  "$format": "zip", "download": "true", "api-version": API_VERSION}
        what = f"zip of {sha}"
        with tempfile.TemporaryFile(prefix="shipbot-azure-repos-") as spool:

            def download() -> None:
                spool.seek(0)
                spool.truncate()
                with self._api.open(f"{self._path}/items", params=params, what=what,
                                    missing=f"no commit {sha}") as response:
                    if response.headers.get("content-type", "").startswith("text/html"):
                        raise errors.PermanentError(f"{self._api.repository}: the {what} is an HTML page "
                                                    "(a sign-in page?): check the token")
                    for chunk in response.iter_bytes(hosted_git.CHUNK_BYTES):
                        spool.write(chunk)
                spool.seek(0)
                hosted_git.extract_zip(spool, destination, what=f"{self._api.repository}: the {what}")

            self._api.retry(download)

    def read_file(self, sha: str, path: str, *, max_bytes: int) -> bytes:
        """One file at `sha` (the quality gate's data set): the item's metadata says it is a file (a blob),
        then `$format=octetStream` streams its bytes (no archive)."""
        hosted_git.require_sha(sha)
        rel = hosted_git.require_path(path, sha)
        params = {"path": f"/{rel}", "versionDescriptor.version": sha, "versionDescriptor.versionType": "commit",
                  "api-version": API_VERSION}
        what, missing = f"{rel} at {sha[:12]}", f"commit {sha[:12]} has no file {rel}"
        item = self._api.get_json(f"{self._path}/items", params={**params, "$format": "json"}, what=what,
                                  missing=missing)
        if not isinstance(item, dict) or item.get("isFolder") or item.get("gitObjectType") != "blob":
            raise errors.NotFound(missing)
        return self._api.get_bytes(f"{self._path}/items", params={**params, "$format": "octetStream"}, what=what,
                                   missing=missing, max_bytes=max_bytes)

    def close(self) -> None:
        self._api.close()

    def _commit(self, sha: str, *, branch: str) -> Commit:
        what = f"commit {sha}"
        where = f"{self._api.repository}: {what}"
        doc = self._api.get_json(f"{self._path}/commits/{sha}", params={"api-version": API_VERSION}, what=what,
                                 missing=f"no commit {sha}")
        answered = hosted_git.field(doc, "commitId", what=where)
        if answered != sha:
            raise errors.PermanentError(f"{where} answered another commit")
        committed = hosted_git.parse_time(hosted_git.field(doc, "committer", "date", what=where), what=where)
        return Commit(sha=sha, branch=branch, committed=committed, source_url=self.source_url)


def _authorization(token: str, credential: TokenCredential | None) -> Callable[[], str] | None:
    """The Authorization header's source: a PAT as Basic with an empty user name, or Entra ID tokens."""
    if token:
        basic = "Basic " + base64.b64encode(f":{token}".encode()).decode()
        return lambda: basic
    if credential is None:
        return None
    token = credentials.CachedToken(credential, AZURE_DEVOPS_SCOPE, audience="Azure DevOps")
    return lambda: f"Bearer {token()}"


def _quote(name: str) -> str:
    return quote(name, safe="")


def _valid_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and name.isprintable() and "/" not in name and "\\" not in name
