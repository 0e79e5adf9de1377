"""PromotingDeployer in process, over the in-memory deployer and a promoter that records what it is asked:
names mapped both ways, other environments untouched, promotion failures as verdicts or errors."""

from __future__ import annotations

import pytest

from shared import errors, ports
from shared.adapters import memory, promoting

REF = "acr.example/shipbot/app@sha256:" + "a" * 64


class Promoter:
    host = "acr.example"

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, str, str, str]] = []

    def promote(self, source_repository: str, digest: str, *, target_repository: str, tag: str) -> str:
        self.calls.append((source_repository, digest, target_repository, tag))
        if self.error:
            raise self.error
        return digest


def deployer(promoter: Promoter) -> tuple[promoting.PromotingDeployer, memory.MemoryDeployer]:
    inner = memory.MemoryDeployer()
    return promoting.PromotingDeployer(inner, promoter, environment="production", prefix="/prod/"), inner


def test_production_gets_the_promoted_name_and_reports_the_engines():
    promoter = Promoter()
    wrapped, inner = deployer(promoter)

    verdict = wrapped.deploy("production", REF, ports.Expectation("r-1"))

    assert verdict.passed and [name for name, _ in verdict.steps] == ["promote"]
    assert promoter.calls == [("shipbot/app", "sha256:" + "a" * 64, "prod/shipbot/app", "r-1")]
    assert inner.running["production"] == "acr.example/prod/shipbot/app@sha256:" + "a" * 64
    assert wrapped.get_running("production") == REF


def test_a_foreign_image_without_a_release_id_is_tagged_by_its_digest():
    promoter = Promoter()
    wrapped, _ = deployer(promoter)

    wrapped.deploy("production", REF, ports.Expectation(None))

    assert promoter.calls[0][3] == "sha256-" + "a" * 64


def test_staging_passes_straight_through():
    promoter = Promoter()
    wrapped, inner = deployer(promoter)

    assert wrapped.deploy("staging", REF, ports.Expectation("r-1")).passed
    assert promoter.calls == [] and inner.running["staging"] == REF == wrapped.get_running("staging")


def test_an_image_that_production_runs_unpromoted_keeps_its_name():
    wrapped, inner = deployer(Promoter())
    inner.running["production"] = REF  # what ran before promotion was switched on

    assert wrapped.get_running("production") == REF


@pytest.mark.parametrize("error", [errors.NotFound("no image shipbot/app@sha256:aaa"),
                                   errors.Refused("prod/shipbot/app:r-1 points at sha256:bbb")])
def test_what_cannot_be_promoted_fails_the_rollout_and_deploys_nothing(error):
    wrapped, inner = deployer(Promoter(error))

    verdict = wrapped.deploy("production", REF, ports.Expectation("r-1"))

    assert not verdict.passed and verdict.reason == f"not promoted: {error}"
    assert inner.rollouts == []


@pytest.mark.parametrize("error", [errors.TransientError("ARM did not answer"),
                                   errors.PermanentError("the identity may not import")])
def test_a_registry_that_fails_raises_for_the_job_to_retry_or_report(error):
    wrapped, inner = deployer(Promoter(error))

    with pytest.raises(type(error)):
        wrapped.deploy("production", REF, ports.Expectation("r-1"))
    assert inner.rollouts == []


def test_an_empty_prefix_is_refused():
    with pytest.raises(errors.PermanentError):
        promoting.PromotingDeployer(memory.MemoryDeployer(), Promoter(), environment="production", prefix="/")
