"""GitHubSource and AzureReposSource beyond the Source contract (tests/contract/test_source_contract.py): secrets,
where the Authorization header goes, error mapping and retries, unsafe archives, URL forms, input checks.

Each test runs against the fakes of the REST APIs (tests/fakes/github_api.py, azure_repos_api.py) serving a real
repository made here with real git; retries sleep through an injected recorder, so nothing waits."""

from __future__ import annotations

import base64
import io
import logging
import socket
import stat
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken

from shared import errors
from shared.adapters.azure import azure_repos_source, github_source, hosted_git
from shared.adapters.azure.azure_repos_source import AzureReposSource
from shared.adapters.azure.github_source import GitHubSource
from tests.fakes import azure_repos_api, git_hosting, github_api

GIT = {**git_hosting.GIT_ENV, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test"}


@dataclass
class Repo:
    path: Path
    main: str       # the head of main and of release
    release_2: str  # the head of release-2, one commit further


def make_repo(path: Path) -> Repo:
    path.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, text=True,
                              env=GIT).stdout.strip()

    git("init", "-q", "-b", "main")
    (path / "app.py").write_text("print('hello')\n")
    git("add", "-A")
    git("commit", "-q", "-m", "one")
    git("branch", "release")
    git("checkout", "-q", "-b", "release-2")
    (path / "app.py").write_text("print('hello again')\n")
    git("commit", "-q", "-am", "two")
    git("checkout", "-q", "main")
    return Repo(path, git("rev-parse", "main"), git("rev-parse", "release-2"))


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path / "repo")


@dataclass
class Host:
    """One hosting service's fake, and how to point its adapter at it."""

    name: str
    fake: git_hosting.Fake
    sleeps: list[float]

    def source(self, **overrides) -> GitHubSource | AzureReposSource:
        kind = GitHubSource if self.name == "github" else AzureReposSource
        options = {"repository_url": self.fake.repository_url, "token": self.fake.token,
                   "api_url": self.fake.api_url, "verify": str(self.fake.ca_file), "sleep": self.sleeps.append}
        return kind(**{**options, **overrides})

    @property
    def rate_limited(self) -> tuple:
        return (github_api if self.name == "github" else azure_repos_api).RATE_LIMITED

    @property
    def server_error(self) -> tuple:
        return (github_api if self.name == "github" else azure_repos_api).SERVER_ERROR


FAKES = {"github": github_api.FakeGitHub, "azure-repos": azure_repos_api.FakeAzureRepos}


@pytest.fixture(params=sorted(FAKES))
def host(request, repo: Repo, tmp_path: Path) -> Iterator[Host]:
    with FAKES[request.param](repo.path, directory=tmp_path) as fake:
        yield Host(request.param, fake, [])


@pytest.fixture(scope="module", params=sorted(FAKES))
def idle_host(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """One fake per module, for tests that make no request: they check that its record stays empty."""
    root = tmp_path_factory.mktemp(request.param)
    with FAKES[request.param](make_repo(root / "repo").path, directory=root) as fake:
        yield Host(request.param, fake, [])
        assert fake.requests == []


@pytest.fixture
def github(repo: Repo, tmp_path: Path) -> Iterator[Host]:
    with github_api.FakeGitHub(repo.path, directory=tmp_path) as fake:
        yield Host("github", fake, [])


@pytest.fixture
def azure(repo: Repo, tmp_path: Path) -> Iterator[Host]:
    with azure_repos_api.FakeAzureRepos(repo.path, directory=tmp_path, bearer_tokens={"entra-token"}) as fake:
        yield Host("azure-repos", fake, [])


def chain(error: BaseException) -> str:
    """The exception, its repr and every exception chained to it, as text."""
    texts = []
    while error is not None:
        texts += [str(error), repr(error)]
        error = error.__cause__ or error.__context__
    return "\n".join(texts)


# -- secrets ------------------------------------------------------------------------------------------------
def test_the_token_is_in_no_repr_source_url_log_or_error(host, repo, caplog):
    caplog.set_level(logging.DEBUG)
    source = host.source()
    commit = source.get_head("main")
    refused = host.source(token="wrong-secret-token-42")
    with pytest.raises(errors.PermanentError) as raised:
        refused.get_head("main")

    assert commit.sha == repo.main and commit.source_url.startswith("https://")
    for secret, where in [(host.fake.token, repr(source)), (host.fake.token, commit.source_url),
                          (host.fake.token, caplog.text), ("wrong-secret-token-42", chain(raised.value)),
                          ("wrong-secret-token-42", repr(refused)), ("wrong-secret-token-42", caplog.text)]:
        assert secret not in where
    assert "401" in str(raised.value) and ("octo-org/app" in str(raised.value) or "contoso" in str(raised.value))


def test_a_token_in_the_repository_url_is_refused_without_quoting_it(host):
    url = host.fake.repository_url.replace("https://", "https://me:hunter2-secret@")

    with pytest.raises(errors.PermanentError) as raised:
        host.source(repository_url=url)

    assert "SHIPBOT_GIT_TOKEN" in str(raised.value) and "hunter2" not in chain(raised.value)


def test_the_authorization_header_reaches_the_api_but_never_codeload(github, repo, tmp_path):
    github.source().archive(repo.main, tmp_path / "out")

    api, codeload = github.fake.requests_to("api"), github.fake.requests_to("codeload")
    assert [r.path.rsplit("/", 2)[-2] for r in api] == ["commits", "tarball"]
    assert all(r.headers.get("authorization") == f"Bearer {github.fake.token}" for r in api)
    assert len(codeload) == 1 and "authorization" not in codeload[0].headers
    assert codeload[0].query["token"] in github.fake.codeload_tokens
    assert (tmp_path / "out" / "app.py").read_text() == "print('hello')\n"


def test_the_short_lived_codeload_token_stays_out_of_httpx_log_lines(github, repo, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="httpx")

    github.source().archive(repo.main, tmp_path / "out")

    (token,) = github.fake.codeload_tokens
    assert "legacy.tar.gz" in caplog.text and "?***" in caplog.text
    assert token not in caplog.text


def test_azure_repos_sends_a_pat_as_basic_auth_with_an_empty_user_name(azure):
    azure.source().get_commit(azure.fake.repo.resolve("refs/heads/main"))

    (request,) = azure.fake.requests
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f":{azure.fake.token}".encode()).decode()


# -- Entra ID tokens for Azure DevOps -----------------------------------------------------------------------
class Credential:
    """A TokenCredential whose tokens expire `lifetime` seconds after they are asked for."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime, self.scopes = lifetime, []

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("entra-token", int(time.time() + self.lifetime))


def test_a_credential_token_is_reused_while_fresh_and_asked_for_again_near_expiry(azure, repo):
    fresh, expiring = Credential(lifetime=3600), Credential(lifetime=60)

    for credential in (fresh, expiring):
        source = azure.source(token="", credential=credential)
        source.get_head("main")
        source.get_commit(repo.release_2)

    assert fresh.scopes == [(azure_repos_source.AZURE_DEVOPS_SCOPE,)]
    assert len(expiring.scopes) == 3  # refs, commit, commit: each within the refresh margin of expiry
    assert all(r.headers["authorization"] == "Bearer entra-token" for r in azure.fake.requests)


def test_a_token_and_a_credential_together_are_refused(azure):
    with pytest.raises(ValueError):
        azure.source(credential=Credential(lifetime=3600))


# -- error mapping and retries ------------------------------------------------------------------------------
def test_a_refused_token_is_a_permanent_error_and_is_not_retried(host):
    with pytest.raises(errors.PermanentError, match="401.*not accepted"):
        host.source(token="not-the-token").get_head("main")

    assert len(host.fake.requests) == 1 and host.sleeps == []


def test_a_token_without_access_is_a_permanent_error(host):
    host.fake.fail_next.append((403, {}, {"message": "Resource not accessible by personal access token"}))

    with pytest.raises(errors.PermanentError, match="403.*lacks read access"):
        host.source().get_head("main")

    assert len(host.fake.requests) == 1


def test_an_anonymous_call_to_a_private_azure_devops_organization_is_a_permanent_error(azure):
    with pytest.raises(errors.PermanentError, match="203.*SHIPBOT_GIT_TOKEN"):
        azure.source(token="").get_head("main")


def test_rate_limiting_is_transient_and_retried_until_the_attempts_are_spent(host):
    host.fake.fail_next.extend([host.rate_limited] * hosted_git.ATTEMPTS)

    with pytest.raises(errors.TransientError, match="rate limited"):
        host.source().get_head("main")

    assert len(host.fake.requests) == hosted_git.ATTEMPTS
    assert len(host.sleeps) == hosted_git.ATTEMPTS - 1 and host.sleeps == sorted(host.sleeps)


def test_server_errors_are_retried_and_a_later_success_is_the_answer(host, repo):
    host.fake.fail_next.extend([host.server_error] * (hosted_git.ATTEMPTS - 1))

    assert host.source().get_head("release-2").sha == repo.release_2
    assert len(host.sleeps) == hosted_git.ATTEMPTS - 1


def test_server_errors_that_outlast_the_retries_are_transient(host):
    host.fake.fail_next.extend([host.server_error] * hosted_git.ATTEMPTS)

    with pytest.raises(errors.TransientError, match="HTTP 500"):
        host.source().get_head("main")


def test_an_api_that_does_not_answer_is_transient(host):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with socket.socket() as silent:  # accepts connections in the kernel, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        for url, pattern in [(f"https://127.0.0.1:{port}", "ConnectError"),
                             (f"https://127.0.0.1:{silent.getsockname()[1]}", "timed out")]:
            with pytest.raises(errors.TransientError, match=pattern):
                host.source(api_url=url, timeout_seconds=0.05).get_head("main")
    assert len(host.sleeps) == 2 * (hosted_git.ATTEMPTS - 1)


def test_a_download_link_that_fails_is_transient_and_asked_for_again(github, repo, tmp_path):
    github.fake.links_expire = True

    with pytest.raises(errors.TransientError, match="HTTP 404 from 127.0.0.1"):
        github.source().archive(repo.main, tmp_path / "out")

    assert len(github.fake.requests_to("codeload")) == hosted_git.ATTEMPTS


def test_a_redirect_to_plain_http_is_not_followed(github, repo, tmp_path):
    github.fake.urls["codeload"] = "http://127.0.0.1:9"

    with pytest.raises(errors.PermanentError, match="plain HTTP"):
        github.source().archive(repo.main, tmp_path / "out")

    assert github.fake.requests_to("codeload") == [] and not any((tmp_path / "out").iterdir())


# -- unsafe archives ----------------------------------------------------------------------------------------
def tarball(members: list[tuple[str, bytes | str]]) -> bytes:
    """A tar.gz of (name, content) members; a str content makes a symlink to it."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def zipped(members: list[tuple[str, bytes | str]]) -> bytes:
    """A zip of (name, content) members; a str content makes a symlink to it, as `git archive` writes one."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members:
            info = zipfile.ZipInfo(name)
            if isinstance(content, str):
                info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
                content = content.encode()
            archive.writestr(info, content)
    return out.getvalue()


UNSAFE = {  # what the member does -> (GitHub tarball members under a top directory, Azure zip members)
    "climbs out with ..": ([("o-app-1/ok.txt", b"ok"), ("o-app-1/../../evil.txt", b"evil")],
                           [("ok.txt", b"ok"), ("../evil.txt", b"evil")]),
    "has an absolute path": ([("o-app-1/ok.txt", b"ok"), ("/tmp/shipbot-evil.txt", b"evil")],
                             [("ok.txt", b"ok"), ("/tmp/shipbot-evil.txt", b"evil")]),
    "links out": ([("o-app-1/ok.txt", b"ok"), ("o-app-1/out", "../../.."), ("o-app-1/out/evil.txt", b"evil")],
                  [("ok.txt", b"ok"), ("out", "../.."), ("out/evil.txt", b"evil")]),
    "links to an absolute path": ([("o-app-1/passwd", "/etc/passwd")], [("passwd", "/etc/passwd")]),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_an_unsafe_archive_member_is_refused_and_nothing_is_written_outside(host, repo, tmp_path, case):
    tar_members, zip_members = UNSAFE[case]
    host.fake.archive_override = tarball(tar_members) if host.name == "github" else zipped(zip_members)
    sandbox = tmp_path / "sandbox"
    destination = sandbox / "dest"

    with pytest.raises(errors.PermanentError, match="unsafe|climbs out|absolute"):
        host.source().archive(repo.main, destination)

    assert [p.name for p in sandbox.iterdir()] == ["dest"]
    assert not Path("/tmp/shipbot-evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not any(p.name == "evil.txt" for p in destination.rglob("*"))


def test_a_tarball_member_outside_the_top_directory_is_refused(github, repo, tmp_path):
    github.fake.archive_override = tarball([("o-app-1/ok.txt", b"ok"), ("other/evil.txt", b"evil")])

    with pytest.raises(errors.PermanentError, match="outside its top directory"):
        github.source().archive(repo.main, tmp_path / "out")

    assert not (tmp_path / "out" / "other").exists()


def test_a_truncated_archive_is_transient_and_fetched_again(host, repo, tmp_path):
    good = host.fake.repo.archive(repo.main, format="tar.gz" if host.name == "github" else "zip",
                                  prefix="o-app-1/" if host.name == "github" else "")
    host.fake.archive_override = good[: len(good) // 2]

    with pytest.raises(errors.TransientError, match="not a readable"):
        host.source().archive(repo.main, tmp_path / "out")

    downloads = [r for r in host.fake.requests_to("api") if "/tarball/" in r.path or r.path.endswith("/items")]
    assert len(downloads) == hosted_git.ATTEMPTS


# -- repository URLs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "expected", "api_url"), [
    ("https://github.com/octo-org/app", "https://github.com/octo-org/app", "https://api.github.com"),
    ("https://github.com/octo-org/app.git", "https://github.com/octo-org/app", "https://api.github.com"),
    ("https://GitHub.com/octo-org/my.app/", "https://github.com/octo-org/my.app", "https://api.github.com"),
    ("https://x-access-token@github.com/octo-org/app.git", "https://github.com/octo-org/app",
     "https://api.github.com"),
    ("https://ghe.example.com/team/app.git", "https://ghe.example.com/team/app", "https://ghe.example.com/api/v3"),
])
def test_github_repository_urls_that_are_accepted(url, expected, api_url):
    repository = github_source.parse_repository_url(url)

    assert (repository.source_url, repository.api_url) == (expected, api_url)


@pytest.mark.parametrize("url", [
    "", "http://github.com/octo-org/app", "git@github.com:octo-org/app.git", "ssh://git@github.com/octo-org/app",
    "https://github.com/octo-org", "https://github.com/octo-org/app/tree/main", "https://github.com/octo-org/..",
    "https://github.com/-octo/app", "https://github.com/octo-org/app?ref=main", "https://github.com/octo-org/app#x",
])
def test_github_repository_urls_that_are_refused(url):
    with pytest.raises(errors.PermanentError, match="GitHub repository URL"):
        github_source.parse_repository_url(url)


@pytest.mark.parametrize(("url", "parsed"), [
    ("https://dev.azure.com/contoso/Shop/_git/app", ("contoso", "Shop", "app")),
    ("https://contoso@dev.azure.com/contoso/Shop%20App/_git/app/", ("contoso", "Shop App", "app")),
    ("https://contoso.visualstudio.com/Shop/_git/app", ("contoso", "Shop", "app")),
    ("https://contoso.visualstudio.com/DefaultCollection/Shop/_git/app", ("contoso", "Shop", "app")),
])
def test_azure_repos_urls_that_are_accepted(url, parsed):
    repository = azure_repos_source.parse_repository_url(url)

    assert (repository.organization, repository.project, repository.name) == parsed
    assert repository.api_url == "https://dev.azure.com/contoso"
    assert repository.source_url == f"https://dev.azure.com/contoso/{parsed[1].replace(' ', '%20')}/_git/app"


@pytest.mark.parametrize("url", [
    "", "http://dev.azure.com/contoso/Shop/_git/app", "https://dev.azure.com/contoso/Shop/app",
    "https://dev.azure.com/contoso/_git/app", "https://dev.azure.com/contoso/Shop/_git/app/extra",
    "https://dev.azure.com/contoso/Shop/_git/app?version=GBmain", "https://github.com/contoso/app",
    "https://visualstudio.com/Shop/_git/app", "https://dev.azure.com/-contoso/Shop/_git/app",
    "git@ssh.dev.azure.com:v3/contoso/Shop/app",
])
def test_azure_repos_urls_that_are_refused(url):
    with pytest.raises(errors.PermanentError, match="an Azure Repos URL is"):
        azure_repos_source.parse_repository_url(url)


def test_an_api_url_that_is_not_https_is_refused(host):
    with pytest.raises(errors.PermanentError, match="https"):
        host.source(api_url=host.fake.api_url.replace("https://", "http://"))


# -- input checks -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("branch", ["", "-main", "a..b", "main.lock", "a//b", "main/", "x@{1}", "a b", "ü"])
def test_an_invalid_branch_name_is_not_found_without_a_request(idle_host, branch):
    with pytest.raises(errors.NotFound, match="not a valid branch name"):
        idle_host.source().get_head(branch)

    assert idle_host.fake.requests == []


@pytest.mark.parametrize("sha", ["", "abc1234", "0" * 39, "A" * 40, "0" * 41, "g" * 40, "main"])
def test_an_invalid_sha_is_not_found_without_a_request(idle_host, sha, tmp_path):
    source = idle_host.source()
    for call in (source.get_commit, lambda s: source.archive(s, tmp_path / "out")):
        with pytest.raises(errors.NotFound, match="not a full commit sha"):
            call(sha)

    assert idle_host.fake.requests == [] and not (tmp_path / "out").exists()


def test_a_branch_name_is_percent_quoted_into_the_path(github, repo):
    subprocess.run(["git", "-C", str(repo.path), "branch", "feature/x"], check=True, env=GIT)

    assert github.source().get_head("feature/x").sha == repo.main
    (request,) = github.fake.requests
    assert request.target == "/repos/octo-org/app/branches/feature%2Fx"


def test_azure_repos_picks_the_exact_branch_among_the_prefix_matches(azure, repo):
    source = azure.source()

    assert source.get_head("release").sha == repo.main
    assert source.get_head("release-2").sha == repo.release_2
    with pytest.raises(errors.NotFound, match="no branch rel"):
        source.get_head("rel")
    assert azure.fake.requests[0].query["filter"] == "heads/release"



# -- one file ---------------------------------------------------------------------------------------------------
def test_read_file_asks_for_that_file_alone_and_never_for_an_archive(host, repo):
    source = host.source()

    assert source.read_file(repo.release_2, "app.py", max_bytes=100) == b"print('hello again')\n"

    targets = [r.target for r in host.fake.requests]
    assert len(targets) == 2, targets  # the entry (is it a file?), then its bytes
    assert not [t for t in targets if "tarball" in t or "format=zip" in t]


def test_read_file_refuses_a_path_that_climbs_out_without_a_request(idle_host):
    source = idle_host.source()
    for path in ("../etc/passwd", "/etc/passwd", "a/../../b", "", "a\\b"):
        with pytest.raises(errors.NotFound, match="not a path in the repository"):
            source.read_file("0" * 40, path, max_bytes=100)
