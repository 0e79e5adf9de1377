"""PromotingDeployer: promotion to production in the registry, in front of any Deployer; ByEnvironment: a
chain whose environments run on different kinds of target.

Before the promoted environment (production) runs an image, the image is promoted: put under
`<registry>/<prefix>/<repository>:<release id>` with its digest kept (AcrRegistry.promote: ACR imports it
server side, or the manifest is copied byte for byte), and the environment runs that repository by digest. So
production pulls only images that were promoted, from a repository whose access, locks and retention can be
its own, and every promotion is visible in the registry. The digest is the one that was smoke-tested and ran
on staging: the same bytes.

The engine keeps naming the image as it knows it (`<registry>/<repository>@<digest>`); this adapter maps to and
from the promoted name, so `get_running` answers in the engine's terms and the engine does not change. Other
environments pass straight through.

Errors: an image gone from the registry, or a tag that points elsewhere, is a failed Verdict naming it (the
environment is untouched); a registry or ARM that fails or refuses (the identity lacks the import role) raises
its TransientError or PermanentError, as a deployer's own infrastructure would.
"""

from __future__ import annotations

import time
from typing import Protocol

from shared import errors, ports

DIGEST_PREFIX = "@sha256:"


class Promoter(Protocol):
    host: str

    def promote(self, source_repository: str, digest: str, *, target_repository: str, tag: str) -> str: ...


class PromotingDeployer:
    def __init__(self, inner: ports.Deployer, promoter: Promoter, *, environment: str, prefix: str) -> None:
        self.inner, self.promoter = inner, promoter
        self.environment = environment
        self.prefix = prefix.strip("/")
        if not self.prefix:
            raise errors.PermanentError("the production prefix is empty")

    def url(self, environment: str) -> str:
        return self.inner.url(environment)

    def get_running(self, environment: str) -> str | None:
        ref = self.inner.get_running(environment)
        if environment != self.environment or ref is None:
            return ref
        return self._unpromoted(ref)

    def deploy(self, environment: str, ref: str, expected: ports.Expectation) -> ports.Verdict:
        if environment != self.environment:
            return self.inner.deploy(environment, ref, expected)
        started = time.monotonic()
        repository, digest = self._split(ref)
        tag = expected.release_id or digest.replace(":", "-")
        try:
            self.promoter.promote(repository, digest, target_repository=f"{self.prefix}/{repository}", tag=tag)
        except (errors.NotFound, errors.Refused) as e:
            return ports.Verdict(False, reason=f"not promoted: {e}", seconds=time.monotonic() - started)
        promoted = time.monotonic() - started
        verdict = self.inner.deploy(environment, self._promoted(ref), expected)
        return ports.Verdict(verdict.passed, verdict.reason, seconds=promoted + verdict.seconds,
                             steps=(("promote", promoted), *verdict.steps))

    # -- names --------------------------------------------------------------------------------------------------
    def _split(self, ref: str) -> tuple[str, str]:
        """`<host>/<repository>@sha256:...` -> (repository, digest); the host must be the promoter's registry."""
        name, at, hexdigest = ref.partition(DIGEST_PREFIX)
        host, _, repository = name.partition("/")
        if not at or not repository or host != self.promoter.host:
            raise errors.PermanentError(f"{ref} is not an image of {self.promoter.host} by digest: "
                                        "only those can be promoted")
        return repository, f"sha256:{hexdigest}"

    def _promoted(self, ref: str) -> str:
        return f"{self.promoter.host}/{self.prefix}/{ref.removeprefix(self.promoter.host + '/')}"

    def _unpromoted(self, ref: str) -> str:
        """What the engine calls the image the environment runs; an image nobody promoted keeps its name."""
        promoted = f"{self.promoter.host}/{self.prefix}/"
        return f"{self.promoter.host}/{ref.removeprefix(promoted)}" if ref.startswith(promoted) else ref


class ByEnvironment:
    """One Deployer for a chain whose environments run on different kinds of target (a local dev container,
    Kubernetes for the rest): each environment goes to the deployer of its target."""

    def __init__(self, deployers: dict[str, ports.Deployer]) -> None:
        self.deployers = dict(deployers)

    def _of(self, environment: str) -> ports.Deployer:
        try:
            return self.deployers[environment]
        except KeyError:
            raise errors.NotFound(f"no environment {environment!r}; known: {', '.join(self.deployers)}") from None

    def get_running(self, environment: str) -> str | None:
        return self._of(environment).get_running(environment)

    def deploy(self, environment: str, ref: str, expected: ports.Expectation) -> ports.Verdict:
        return self._of(environment).deploy(environment, ref, expected)

    def url(self, environment: str) -> str:
        return self._of(environment).url(environment)
