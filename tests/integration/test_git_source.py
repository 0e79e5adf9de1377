"""GitSource on temporary repositories made by real git: what the contract suite cannot say about git."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from shared import errors
from shared.adapters.local.git_source import GitSource

pytestmark = pytest.mark.integration
ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.test", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=ENV).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "model_api").mkdir()
    (repo / "model_api" / "Dockerfile").write_text("FROM scratch\n")
    (repo / "model_api" / "run.sh").write_text("#!/bin/sh\n")
    (repo / "model_api" / "run.sh").chmod(0o755)
    (repo / "model_api" / "latest").symlink_to("Dockerfile")
    (repo / "big.bin").write_bytes(os.urandom(3 << 20))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def test_archive_reproduces_files_modes_and_symlinks_of_the_commit(repo, tmp_path):
    source = GitSource(repo=repo)
    sha = git(repo, "rev-parse", "HEAD")
    (repo / "model_api" / "Dockerfile").write_text("FROM changed-but-not-committed\n")

    source.archive(sha, tmp_path / "out")

    out = tmp_path / "out"
    assert (out / "model_api" / "Dockerfile").read_text() == "FROM scratch\n"
    assert os.access(out / "model_api" / "run.sh", os.X_OK)
    assert os.readlink(out / "model_api" / "latest") == "Dockerfile"
    assert (out / "big.bin").read_bytes() == (repo / "big.bin").read_bytes()
    assert not (out / ".git").exists()


def test_commit_reports_the_branch_that_holds_it_and_a_source_url_without_credentials(repo):
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "f.txt").write_text("feature\n")
    git(repo, "add", "f.txt")
    git(repo, "commit", "-q", "-m", "feature work")
    feature_sha = git(repo, "rev-parse", "HEAD")
    main_sha = git(repo, "rev-parse", "main")
    source = GitSource(repo=repo, source_url="https://ci:s3cret@git.example:8443/team/app.git?token=x#y")

    assert source.get_commit(feature_sha).branch == "feature"
    assert source.get_commit(main_sha).branch == "feature"  # the checked-out branch holds it too
    assert source.get_head("main").sha == main_sha
    assert source.get_head("main").source_url == "https://git.example:8443/team/app.git"


@pytest.mark.parametrize("argument", ["--output=/tmp/x", "-h", "main..other", "HEAD@{1}", "a b", "x.lock", ""])
def test_branch_names_that_could_be_options_or_revisions_are_refused_before_git_runs(repo, argument):
    with pytest.raises(errors.NotFound, match="not a valid branch name"):
        GitSource(repo=repo).get_head(argument)


@pytest.mark.parametrize("argument", ["--help", "HEAD", "main", "abc123", "0" * 39, "g" * 40])
def test_only_full_hex_shas_are_taken_as_commits(repo, argument, tmp_path):
    source = GitSource(repo=repo)
    with pytest.raises(errors.NotFound, match="not a full commit sha"):
        source.get_commit(argument)
    with pytest.raises(errors.NotFound):
        source.archive(argument, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_path_that_is_no_repository_is_a_transient_error_not_a_missing_branch(tmp_path):
    with pytest.raises(errors.TransientError):
        GitSource(repo=tmp_path / "nothing-here").get_head("main")
