"""The Source port's contract, run against every adapter of it: the in-memory fake, GitSource on a temporary
repository made by real git, and GitHubSource and AzureReposSource on the same repository served by fakes of
their REST APIs (tests/fakes/github_api.py, azure_repos_api.py: real HTTPS, real git behind them)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared import errors
from shared.adapters.azure.azure_repos_source import AzureReposSource
from shared.adapters.azure.github_source import GitHubSource
from shared.adapters.local.git_source import GitSource
from tests.fakes.azure_repos_api import FakeAzureRepos
from tests.fakes.github_api import FakeGitHub

HAS_MEMORY = importlib.util.find_spec("shared.adapters.memory") is not None


class GitHarness:
    """A real repository; each commit adds a file and a model_api/ tree."""

    def __init__(self, root: Path) -> None:
        self.repo = root / "repo"
        self.source = GitSource(repo=self.repo, source_url="https://user:token@git.example/team/app.git?x=1")
        self.repo.mkdir()
        self.git("init", "-q", "-b", "main")
        self.count = 0

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        base = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@example.test", "HOME": str(self.repo.parent), "PATH": "/usr/bin:/bin"}
        return subprocess.run(["git", "-C", str(self.repo), *args], check=True, capture_output=True, text=True,
                              env={**base, **(env or {})}).stdout.strip()

    def commit(self, *, branch: str, at: datetime) -> str:
        if branch not in self.git("branch", "--format=%(refname:short)").split() and self.count:
            self.git("checkout", "-q", "-b", branch)
        else:
            self.git("checkout", "-q", "-B", branch)
        self.count += 1
        (self.repo / "model_api").mkdir(exist_ok=True)
        (self.repo / "model_api" / f"file{self.count}.txt").write_text(f"commit {self.count}\n")
        self.git("add", "-A")
        stamp = at.isoformat()
        self.git("commit", "-q", "-m", f"commit {self.count}",
                 env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})
        return self.git("rev-parse", "HEAD")


class MemoryHarness:
    def __init__(self) -> None:
        from shared.adapters import memory

        self.source = memory.MemorySource()

    def commit(self, *, branch: str, at: datetime) -> str:
        """As GitHarness's: each commit adds model_api/file<n>.txt to the tree of the one before."""
        sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        before = self.source.files.get(self.source._heads.get(branch, ""), {})
        count = len(self.source.files) + 1
        self.source.commit(sha, branch=branch, at=at,
                           files={**before, f"model_api/file{count}.txt": f"commit {count}\n".encode()})
        return sha


def _no_sleep(seconds: float) -> None:
    pass


CLOUD = {  # harness name -> (the fake of the API, how the adapter is pointed at it)
    "github": (FakeGitHub, lambda fake: GitHubSource(
        repository_url=fake.repository_url, token=fake.token, api_url=fake.api_url, verify=str(fake.ca_file),
        sleep=_no_sleep)),
    "azure-repos": (FakeAzureRepos, lambda fake: AzureReposSource(
        repository_url=fake.repository_url, token=fake.token, api_url=fake.api_url, verify=str(fake.ca_file),
        sleep=_no_sleep)),
}


@pytest.fixture(params=[
    "git",
    "github",
    "azure-repos",
    pytest.param("memory", marks=pytest.mark.skipif(not HAS_MEMORY, reason="shared/adapters/memory.py missing")),
])
def harness(request, tmp_path):
    if request.param == "memory":
        yield MemoryHarness()
        return
    git = GitHarness(tmp_path)
    if request.param == "git":
        yield git
        return
    fake_type, adapter = CLOUD[request.param]
    with fake_type(git.repo, directory=tmp_path) as fake:
        git.source = adapter(fake)  # the same repository, through the API
        yield git
        git.source.close()


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_get_head_answers_the_newest_commit_of_the_branch_with_its_time(harness):
    harness.commit(branch="main", at=T0)
    newest = harness.commit(branch="main", at=T0 + timedelta(minutes=5))

    head = harness.source.get_head("main")

    assert (head.sha, head.branch, head.committed) == (newest, "main", T0 + timedelta(minutes=5))


def test_get_head_of_a_branch_that_does_not_exist_is_not_found(harness):
    harness.commit(branch="main", at=T0)

    with pytest.raises(errors.NotFound):
        harness.source.get_head("no-such-branch")


def test_get_commit_finds_an_older_commit_and_refuses_an_unknown_one(harness):
    older = harness.commit(branch="main", at=T0)
    harness.commit(branch="main", at=T0 + timedelta(minutes=1))

    assert harness.source.get_commit(older).committed == T0
    with pytest.raises(errors.NotFound):
        harness.source.get_commit("0123456789abcdef0123456789abcdef01234567")


def test_archive_writes_the_tree_into_the_destination(harness, tmp_path):
    sha = harness.commit(branch="main", at=T0)
    (tmp_path / "out").mkdir()

    harness.source.archive(sha, tmp_path / "out")

    assert any((tmp_path / "out").iterdir())


def test_archive_of_an_unknown_commit_is_not_found(harness, tmp_path):
    harness.commit(branch="main", at=T0)

    with pytest.raises(errors.NotFound):
        harness.source.archive("0123456789abcdef0123456789abcdef01234567", tmp_path)


def tree(root: Path) -> dict[str, tuple]:
    """Every file and link below root: path -> ("file", bytes, executable) or ("link", target)."""
    found = {}
    for folder, directories, files in os.walk(root):
        for name in files + [d for d in directories if Path(folder, d).is_symlink()]:
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            found[relative] = ("link", os.readlink(path)) if path.is_symlink() else \
                ("file", path.read_bytes(), os.access(path, os.X_OK))
    return found


def test_archive_writes_the_files_and_bytes_that_git_archive_writes(harness, tmp_path):
    if not isinstance(harness, GitHarness):
        pytest.skip("the in-memory fake writes a marker, not a tree")
    (harness.repo / "bin").mkdir()
    (harness.repo / "bin" / "serve.sh").write_text("#!/bin/sh\nexec model-api\n")
    (harness.repo / "bin" / "serve.sh").chmod(0o755)
    (harness.repo / "notes ü.txt").write_bytes("naïve\r\n\x00binary".encode())
    (harness.repo / "latest").symlink_to("model_api/file1.txt")
    sha = harness.commit(branch="main", at=T0)

    harness.source.archive(sha, tmp_path / "adapter")
    GitSource(repo=harness.repo).archive(sha, tmp_path / "git")

    written = tree(tmp_path / "adapter")
    assert written == tree(tmp_path / "git")
    assert written["bin/serve.sh"][2] is True and written["latest"] == ("link", "model_api/file1.txt")
    assert {"model_api/file1.txt", "notes ü.txt"} <= set(written)


def test_read_file_answers_one_file_of_the_commit_and_refuses_what_it_lacks_or_what_is_too_large(harness):
    first = harness.commit(branch="main", at=T0)
    second = harness.commit(branch="main", at=T0 + timedelta(minutes=1))

    assert harness.source.read_file(second, "model_api/file1.txt", max_bytes=100) == b"commit 1\n"
    assert harness.source.read_file(second, "model_api/file2.txt", max_bytes=100) == b"commit 2\n"
    for sha, path in ((first, "model_api/file2.txt"), (second, "model_api/absent.txt"), (second, "../etc/passwd"),
                      (second, "model_api")):
        with pytest.raises(errors.NotFound):
            harness.source.read_file(sha, path, max_bytes=100)
    with pytest.raises(errors.PermanentError, match="more than 3"):
        harness.source.read_file(second, "model_api/file1.txt", max_bytes=3)
