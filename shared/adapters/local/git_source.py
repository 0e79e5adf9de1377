"""GitSource: the application's repository as a local git checkout (ports.Source). GitHub's or Azure Repos'
archive API stands here in Azure.

Every call runs real git (`git -C <repo> ...`) without a shell. Branch names and shas are checked before they
reach a command line and are passed after `--end-of-options`, so that no argument can become an option.
`archive` streams `git archive` straight into tar extraction: the tree is never held whole in memory.
Errors: an unknown branch or commit is NotFound; git failing otherwise is a TransientError.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from shared import errors
from shared.releases import Commit

SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1 or SHA-256 object names, in full
BRANCH = re.compile(r"(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/-]{1,200}(?<![./])(?<!\.lock)")
STDERR_CHARS = 300


class GitSource:
    def __init__(self, *, repo: Path, source_url: str = "", timeout_seconds: float = 60.0) -> None:
        """`source_url` is what image labels and commits cite as the source; only its scheme, host and path
        are kept, so a token in it never reaches a label or a log."""
        self.repo = Path(repo)
        self.source_url = _public_url(source_url)
        self.timeout_seconds = timeout_seconds

    def get_head(self, branch: str) -> Commit:
        if not BRANCH.fullmatch(branch):
            raise errors.NotFound(f"no branch {branch!r}: not a valid branch name")
        sha, committed = self._show(f"refs/heads/{branch}", missing=f"no branch {branch}")
        return Commit(sha=sha, branch=branch, committed=committed, source_url=self.source_url)

    def get_commit(self, sha: str) -> Commit:
        if not SHA.fullmatch(sha):
            raise errors.NotFound(f"no commit {sha!r}: not a full commit sha")
        sha, committed = self._show(sha, missing=f"no commit {sha}")
        return Commit(sha=sha, branch=self._branch_of(sha), committed=committed, source_url=self.source_url)

    def archive(self, sha: str, destination: Path) -> None:
        """Writes the tree at `sha` into `destination` (created if missing)."""
        self.get_commit(sha)  # NotFound before anything is written
        destination.mkdir(parents=True, exist_ok=True)
        command = self._command("archive", "--format=tar", "--end-of-options", f"{sha}^{{tree}}")
        try:
            git = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise errors.TransientError(f"git archive did not run: {type(e).__name__}") from None
        with git:
            assert git.stdout is not None
            try:
                with tarfile.open(fileobj=git.stdout, mode="r|") as tar:
                    tar.extractall(destination, filter="data")
            except tarfile.TarError as e:
                git.kill()
                raise errors.TransientError(f"git archive of {sha} gave an unreadable tar: {e}") from None
            finally:
                git.stdout.close()
            stderr = git.stderr.read() if git.stderr else b""
            if git.wait(timeout=self.timeout_seconds) != 0:
                raise errors.TransientError(f"git archive of {sha} failed: {_short(stderr)}")

    def read_file(self, sha: str, path: str, *, max_bytes: int) -> bytes:
        self.get_commit(sha)
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise errors.NotFound(f"{path!r} is not a path inside the repository")
        blob = f"{sha}:{path}"
        kind = self._git("cat-file", "-t", "--end-of-options", blob, check=False)
        if kind.returncode != 0 or kind.stdout.strip() != b"blob":
            raise errors.NotFound(f"commit {sha[:12]} has no file {path}")
        size = int(self._git("cat-file", "-s", "--end-of-options", blob).stdout)
        if size > max_bytes:
            raise errors.PermanentError(f"{path} at {sha[:12]} takes {size:,} bytes, more than {max_bytes:,}")
        return self._git("cat-file", "blob", "--end-of-options", blob).stdout

    # -- git --------------------------------------------------------------------------------------------------
    def _show(self, revision: str, *, missing: str) -> tuple[str, datetime]:
        # rev-parse --verify --quiet exits 1, silently, for a revision that does not resolve: no stderr parsing,
        # so a translated git answers the same.
        resolved = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}",
                             check=False)
        if resolved.returncode == 1:
            raise errors.NotFound(missing)
        if resolved.returncode != 0:
            raise errors.TransientError(f"git rev-parse {revision} failed: {_short(resolved.stderr)}")
        sha = resolved.stdout.decode().strip()
        committed = self._git("show", "-s", "--format=%cI", "--end-of-options", sha, "--").stdout.decode().strip()
        return sha, datetime.fromisoformat(committed).astimezone(UTC)

    def _branch_of(self, sha: str) -> str:
        """A branch that holds the commit: the checked-out one if it does, else the first by name, else ""."""
        holding = self._git("for-each-ref", "--format=%(refname:short)", f"--contains={sha}",
                            "refs/heads/").stdout.decode().split()
        current = self._git("symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.decode().strip()
        if current in holding:
            return current
        return holding[0] if holding else ""

    def _command(self, *args: str) -> list[str]:
        return ["git", "-C", str(self.repo), "-c", "core.quotepath=off", *args]

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        try:
            result = subprocess.run(self._command(*args), capture_output=True, timeout=self.timeout_seconds,
                                    check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise errors.TransientError(f"git {args[0]} did not run: {type(e).__name__}") from None
        if check and result.returncode != 0:
            raise errors.TransientError(f"git {args[0]} failed: {_short(result.stderr)}")
        return result


def _public_url(url: str) -> str:
    if not url:
        return ""
    parts = urlsplit(url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _short(stderr: bytes) -> str:
    text = " ".join(stderr.decode("utf-8", "replace").split())
    return text[:STDERR_CHARS]
