"""The engine over the in-memory fakes: the rules of docs/architecture.md, one test each."""

from __future__ import annotations

import dataclasses

import threading
from datetime import UTC, datetime, timedelta

import pytest

from shared import errors, events, fleet, jobs, operations
from shared.adapters import memory
from shared.bot import Bot
from shared.engine import Config, Engine
from shared.ports import Ports
from shared.ports import Verdict
from shared.releases import Entry, Status

REPO = "registry.test/shipbot/app"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class World:
    """The engine, its fakes, and a little driver that plays the build service and the queue."""

    def __init__(self) -> None:
        self.clock = memory.ManualClock(T0)
        self.ledger, self.models, self.source = memory.MemoryLedger(lease_wait_seconds=10), memory.MemoryModels(), memory.MemorySource()
        self.builder, self.registry = memory.MemoryBuilder(), memory.MemoryRegistry()
        self.smoke, self.deployer, self.notifier = memory.MemorySmokeRunner(), memory.MemoryDeployer(), memory.MemoryNotifier()
        self.engine = Engine(Ports(self.ledger, self.source, self.models, self.builder, self.registry, self.smoke,
                                   self.deployer, self.notifier, self.clock),
                             Config(repository=REPO, allowed_repositories=frozenset({REPO, "registry.test/other"})))
        self.source.commit("c1" * 20, at=T0)
        self._events = 0
        self._counting = False

    def bot(self, settings=None) -> Bot:
        """A bot whose fleet is the single application `settings` describe, run by this world's engine."""
        from shared.settings import Settings

        return Bot(ledger=self.ledger, default=fleet.single(settings or Settings(registry="registry.test")),
                   engine_for=lambda app: self.engine, root="app")

    def night(self) -> list[jobs.Job]:
        """The next 02:00 UTC passes: production's schedule slot fires (the first call starts its count)."""
        if not self._counting:
            self.engine.schedules_due()
            self._counting = True
        now = self.clock.now
        slot = now.replace(hour=2, minute=0, second=0, microsecond=0)
        self.clock.now = slot if slot > now else slot + timedelta(days=1)
        return self.deliver(events.PromotionDue(self.clock.now))

    def upload(self, version: str, payload: bytes = b"") -> events.ModelUploaded:
        self.models.put("diabetes", version, {"model.joblib": payload or version.encode()}, uploaded=self.clock())
        return self.event_model(version)

    def event_model(self, version: str) -> events.ModelUploaded:
        self._events += 1
        return events.ModelUploaded(f"e{self._events}", "diabetes", version, f"diabetes/{version}/model.joblib",
                                    "http://x/models/diabetes", 10, '"0x1"', "0" * 16, T0)

    def image_event(self, repository: str, tag: str | None, digest: str, event_id: str | None = None) -> events.ImagePushed:
        self._events += 1
        return events.ImagePushed(event_id or f"e{self._events}", "registry.test", repository, tag, digest,
                                  "application/vnd.oci.image.manifest.v1+json", T0)

    def deliver(self, event) -> list[jobs.Job]:
        return self.engine.handle(event).jobs

    def run(self, todo: list[jobs.Job]) -> list[str]:
        """Runs the jobs and those they enqueue, in queue order, as the work queue would; their summaries."""
        queue, summaries = list(todo), []
        while queue:
            outcome = self.engine.run(queue.pop(0))
            summaries.append(outcome.summary)
            queue += outcome.jobs
        return summaries

    def finish_builds(self) -> list[jobs.Job]:
        """Every running build succeeds and its push event is delivered; returns the jobs that follow."""
        out = []
        for build_id, build in list(self.builder.builds.items()):
            if build.state == "running":
                digest = self.builder.succeed(build_id, self.registry)
                request = self.builder.requests[build_id]
                out += self.deliver(self.image_event("shipbot/app", request.tag, digest))
        return out

    def ship(self, version: str) -> str:
        """Upload -> build -> push -> smoke -> staging; returns the release id."""
        self.deliver(self.upload(version))
        self.run(self.finish_builds())
        return self.ledger.list_releases()[0].id


@pytest.fixture
def world() -> World:
    return World()


def test_model_upload_builds_the_head_commit_with_that_model(world):
    world.deliver(world.upload("1"))
    [request] = world.builder.requests.values()
    release = world.ledger.get_release(request.release_id)
    assert (release.commit, release.model.version, release.status) == ("c1" * 20, "1", Status.BUILDING)
    assert request.tag == release.id and request.repository == REPO


def test_upload_to_staging_end_to_end(world):
    release_id = world.ship("1")
    release = world.ledger.get_release(release_id)
    assert release.status is Status.GREEN and release.deployed == ("staging",)
    assert world.deployer.running["staging"] == release.ref
    assert world.ledger.get_environment("staging").current.release_id == release_id


def test_duplicate_event_builds_once_and_deploys_once(world):
    event = world.upload("1")
    world.deliver(event)
    assert world.engine.handle(event).jobs == [] and len(world.builder.requests) == 1
    build_id = next(iter(world.builder.requests))
    digest = world.builder.succeed(build_id, world.registry)
    pushed = world.image_event("shipbot/app", world.builder.requests[build_id].tag, digest)
    first, again = world.deliver(pushed), world.deliver(pushed)
    assert again == [] and len(first) == 1
    world.run(first + first)  # a job delivered twice by the queue
    assert len(world.deployer.rollouts) == 1 and len(world.smoke.runs) == 1


def test_same_content_under_a_new_event_id_builds_once(world):
    world.deliver(world.upload("1"))
    world.deliver(world.event_model("1"))
    assert len(world.builder.requests) == 1


def test_late_event_of_an_older_model_changes_nothing(world):
    world.ship("1")
    world.ship("2")
    writes = world.ledger.writes
    assert world.deliver(world.event_model("1")) == []
    assert len(world.builder.requests) == 2 and world.ledger.writes == writes


def test_commit_push_builds_that_commit_with_the_current_model(world):
    world.ship("1")
    world.source.commit("c2" * 20, at=T0)
    world.deliver(events.CommitPushed("gh1", "github", "app", "main", "c2" * 20, "http://g", "dev", T0))
    assert world.ledger.list_releases()[0].commit == "c2" * 20


def test_a_push_to_a_repository_no_application_names_is_acknowledged_and_changes_nothing():
    world = World()
    world.engine.config = dataclasses.replace(world.engine.config, source_repository="https://github.com/contoso/app")
    world.ship("1")
    world.source.commit("c2" * 20, at=T0)
    writes, built = world.ledger.writes, len(world.builder.requests)

    outcome = world.engine.handle(events.CommitPushed("gh2", "github", "mallory/app", "main", "c2" * 20,
                                                      "https://github.com/mallory/app.git", "mallory", T0))

    assert outcome.summary.startswith("ignored: a push to https://github.com/mallory/app.git (mallory/app)")
    assert outcome.jobs == [] and len(world.builder.requests) == built
    assert world.ledger.list_releases()[0].commit != "c2" * 20
    assert world.ledger.writes == writes  # the event marker is not a document

    world.deliver(events.CommitPushed("gh3", "github", "contoso/app", "main", "c2" * 20,
                                      "https://GitHub.com/contoso/app.git", "dev", T0))
    assert world.ledger.list_releases()[0].commit == "c2" * 20  # the app's own repository, however written


def test_newer_release_supersedes_an_older_one_in_flight(world):
    world.deliver(world.upload("1"))
    world.deliver(world.upload("2"))
    old, new = sorted(world.ledger.list_releases(), key=lambda r: r.created)
    assert world.ledger.get_release(old.id).status is Status.SUPERSEDED
    world.run(world.finish_builds())
    assert world.deployer.running["staging"] == world.ledger.get_release(new.id).ref
    assert len(world.smoke.runs) == 1  # the superseded image was never tested


def test_failed_smoke_test_is_not_deployed_and_the_ledger_says_why(world):
    world.deliver(world.upload("1"))
    build_id = next(iter(world.builder.requests))
    digest = world.builder.succeed(build_id, world.registry)
    world.smoke.failures[f"{REPO}@{digest}"] = "/version reports release r-x, expected r-y"
    world.run(world.deliver(world.image_event("shipbot/app", world.builder.requests[build_id].tag, digest)))
    release = world.ledger.list_releases()[0]
    assert release.status is Status.FAILED and "r-x" in release.reason
    assert "staging" not in world.deployer.running


def test_rollout_that_fails_verification_rolls_back(world):
    good = world.ship("1")
    world.deliver(world.upload("2"))
    build_id = [b for b, s in world.builder.builds.items() if s.state == "running"][0]
    digest = world.builder.succeed(build_id, world.registry)
    world.deployer.broken[f"{REPO}@{digest}"] = "/version answered 500"
    world.run(world.deliver(world.image_event("shipbot/app", world.builder.requests[build_id].tag, digest)))
    bad = world.ledger.get_release(world.builder.requests[build_id].release_id)
    assert bad.status is Status.FAILED and bad.rolled_back and "500" in bad.reason
    assert world.ledger.get_environment("staging").current.release_id == good
    assert world.deployer.running["staging"] == world.ledger.get_release(good).ref


def test_foreign_image_push_is_tested_and_deployed(world):
    digest = "sha256:" + "ab" * 32
    world.registry.push("other", "v9", digest, labels={"org.opencontainers.image.revision": "f00d"})
    world.run(world.deliver(world.image_event("other", "v9", digest)))
    release = world.ledger.list_releases()[0]
    assert release.id.startswith("i-") and release.commit == "f00d" and release.status is Status.GREEN
    assert world.deployer.running["staging"] == f"registry.test/other@{digest}"


def test_image_outside_the_allow_list_is_ignored(world):
    outcome = world.engine.handle(world.image_event("elsewhere", "v1", "sha256:" + "cd" * 32))
    assert "allow-list" in outcome.summary and world.ledger.writes == 0


def test_nightly_promotes_the_newest_green_staging_release(world):
    world.ship("1")
    second = world.ship("2")
    world.run(world.night())
    assert world.ledger.get_environment("production").current.release_id == second
    assert world.night() == []  # nothing newer: nothing to do


@pytest.mark.parametrize("flag", ["held", "rolled_back"])
def test_held_and_rolled_back_releases_are_not_promoted(world, flag):
    first = world.ship("1")
    second = world.ship("2")
    world.ledger.update_release(second, lambda r: r.with_(**{flag: True}))
    world.run(world.night())
    assert world.ledger.get_environment("production").current.release_id == first


def test_no_automatic_downgrade_of_staging(world):
    world.ship("1")
    world.deliver(world.upload("2"))
    new_build = [b for b, s in world.builder.builds.items() if s.state == "running"][0]
    world.run(world.finish_builds())
    current = world.ledger.get_environment("staging").current.release_id
    assert current == world.builder.requests[new_build].release_id
    old = world.ledger.list_releases()[1]
    assert "no downgrade" in world.engine.run(jobs.rollout("staging", old.id)).summary


def test_manual_deploy_of_an_older_release_needs_force_and_is_recorded(world):
    first = world.ship("1")
    world.ship("2")
    with pytest.raises(errors.Refused, match="no downgrade"):
        operations.deploy(world.engine, "staging", release_id=first, by="ana", reason="bad model")
    world.run([operations.deploy(world.engine, "staging", release_id=first, by="ana", reason="bad model", force=True)])
    env = world.ledger.get_environment("staging")
    assert env.current.release_id == first and "forced by ana" in env.history[-1].detail
    assert world.deliver(events.ReconcileDue(T0)) == []  # reconcile does not fight the operator


def test_rollback_goes_to_the_previous_release_and_marks_the_current(world):
    first = world.ship("1")
    second = world.ship("2")
    world.run([operations.rollback(world.engine, "staging", by="ana", reason="latency")])
    assert world.ledger.get_environment("staging").current.release_id == first
    assert world.ledger.get_release(second).rolled_back
    with pytest.raises(errors.Refused):
        operations.rollback(world.engine, "staging", by="ana", reason="again")


def test_two_rollouts_at_once_run_one_at_a_time(world):
    first = world.ship("1")
    second = world.ship("2")
    world.run([jobs.rollout("production", first, by="x", force=True, automatic=False)])
    entered = threading.Event()
    world.deployer.during_rollout = lambda: entered.set() or threading.Event().wait(0.05)
    todo = [jobs.rollout("production", second, by="a", force=True, automatic=False),
            jobs.rollout("production", first, by="b", force=True, automatic=False)]
    threads = [threading.Thread(target=world.engine.run, args=(job,)) for job in todo]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert world.deployer.max_concurrent == 1
    env = world.ledger.get_environment("production")
    assert [e.what for e in env.history].count("deployed") == 3
    assert world.deployer.running["production"] == world.ledger.get_release(env.current.release_id).ref


def test_lost_image_event_is_repaired_by_reconcile(world):
    world.deliver(world.upload("1"))
    build_id = next(iter(world.builder.requests))
    world.builder.succeed(build_id, world.registry)  # pushed, but the event never arrives
    world.run(world.deliver(events.ReconcileDue(T0)))
    assert world.ledger.list_releases()[0].status is Status.GREEN and "staging" in world.deployer.running


def test_lost_upload_event_is_repaired_by_reconcile(world):
    world.models.put("diabetes", "1", {"model.joblib": b"m"}, uploaded=T0)
    world.deliver(events.ReconcileDue(T0))
    assert len(world.builder.requests) == 1


def test_failed_build_is_recorded_and_retried_by_reconcile_up_to_the_limit(world):
    world.deliver(world.upload("1"))
    for attempt in range(1, 4):
        build_id = [b for b, s in world.builder.builds.items() if s.state == "running"][0]
        world.builder.fail(build_id, "pip could not resolve numpy")
        world.deliver(events.ReconcileDue(T0))
    release = world.ledger.list_releases()[0]
    assert release.status is Status.FAILED and "numpy" in release.reason and release.build_attempts == 3
    assert world.notifier.messages[-1][2] is True


def test_handler_failure_lets_the_redelivery_try_again(world):
    event = world.upload("1")
    world.source._heads.clear()  # the source is unreachable: get_head raises
    with pytest.raises(errors.NotFound):
        world.deliver(event)
    world.source.commit("c3" * 20, at=T0)
    world.deliver(event)
    assert len(world.builder.requests) == 1


def test_manual_build_returns_the_existing_release(world):
    release_id = world.ship("1")
    release, created = operations.build(world.engine, commit=None, model=None, by="ana")
    assert (release.id, created) == (release_id, False)
    with pytest.raises(errors.NotFound):
        operations.build(world.engine, commit=None, model="diabetes/9", by="ana")


def test_hold_is_recorded_with_who_and_why(world):
    release_id = world.ship("1")
    release = operations.hold(world.engine, release_id, by="ana", reason="audit")
    assert release.held and release.history[-1].by == "ana" and release.history[-1].detail == "audit"


def test_two_test_jobs_at_once_run_one_smoke_test(world):
    world.deliver(world.upload("1"))
    build_id = next(iter(world.builder.requests))
    digest = world.builder.succeed(build_id, world.registry)
    [job] = world.deliver(world.image_event("shipbot/app", world.builder.requests[build_id].tag, digest))
    inside, release = threading.Event(), threading.Event()
    real_run = world.smoke.run

    def slow_run(ref, expected):
        inside.set()
        release.wait(5)
        return real_run(ref, expected)

    world.smoke.run = slow_run
    first = threading.Thread(target=world.engine.run, args=(job,))
    first.start()
    assert inside.wait(5)
    assert "no test" in world.engine.run(job).summary  # the duplicate, while the first is still testing
    release.set()
    first.join()
    assert len(world.smoke.runs) == 1


# -- faults: what a dead worker leaves behind ------------------------------------------------------------------
def test_a_lost_build_is_restarted_at_once_and_is_neither_failed_nor_an_attempt(world):
    world.deliver(world.upload("1"))
    lost = next(iter(world.builder.requests))
    del world.builder.builds[lost]  # the host that ran it restarted: the builder has no record of it
    world.deliver(events.ReconcileDue(T0))
    release = world.ledger.list_releases()[0]
    assert release.status is Status.BUILDING and release.build_attempts == 1 and release.reason == ""
    assert release.build_id != lost and len(world.builder.requests) == 2
    assert release.history[-1].what == "build restarted" and lost in release.history[-1].detail
    world.run(world.finish_builds())
    assert world.ledger.get_release(release.id).status is Status.GREEN and len(world.deployer.rollouts) == 1


def test_a_lost_build_whose_image_was_pushed_is_taken_from_the_registry_not_built_again(world):
    world.deliver(world.upload("1"))
    lost = next(iter(world.builder.requests))
    digest = world.builder.succeed(lost, world.registry)  # pushed, then the host died: event and record gone
    del world.builder.builds[lost]
    world.run(world.deliver(events.ReconcileDue(T0)))
    release = world.ledger.list_releases()[0]
    assert (release.status, release.digest, len(world.builder.requests)) == (Status.GREEN, digest, 1)


def test_an_image_under_the_tag_that_another_release_built_is_not_taken(world):
    world.deliver(world.upload("1"))
    lost = next(iter(world.builder.requests))
    del world.builder.builds[lost]
    tag = world.builder.requests[lost].tag
    world.registry.push("shipbot/app", tag, "sha256:" + "f" * 64, labels={"dev.shipbot.release.id": "r-someone-else"})
    world.deliver(events.ReconcileDue(T0))
    assert len(world.builder.requests) == 2  # built again rather than trusting a foreign image


def pushed_release(world) -> tuple[str, jobs.Job]:
    world.deliver(world.upload("1"))
    build_id = next(iter(world.builder.requests))
    digest = world.builder.succeed(build_id, world.registry)
    [job] = world.deliver(world.image_event("shipbot/app", world.builder.requests[build_id].tag, digest))
    return world.builder.requests[build_id].release_id, job


def test_a_release_left_testing_by_a_dead_tester_is_tested_again_once_its_lease_is_free(world):
    release_id, job = pushed_release(world)
    world.ledger.update_release(release_id, lambda r: r.with_(status=Status.TESTING))  # claimed, then died
    with world.ledger.lease_release(release_id):  # while its lease is held, it may still be running
        assert world.deliver(events.ReconcileDue(T0)) == []
    [again] = world.deliver(events.ReconcileDue(T0))
    world.run([again, job])  # the repair and the redelivered job: one test between them
    assert world.ledger.get_release(release_id).status is Status.GREEN and len(world.smoke.runs) == 1
    assert any(e.what == "smoke test restarted (its tester died)" for e in world.ledger.get_release(release_id).history)


def test_a_rollout_left_pending_by_a_dead_worker_is_redone_by_reconcile(world):
    release_id = world.ship("1")
    world.ship("2")
    newest = world.ledger.list_releases()[0].id
    job = operations.promote(world.engine, release_id=newest, by="ana", reason="go")
    world.deployer.during_rollout = lambda: (_ for _ in ()).throw(KeyboardInterrupt("the worker died"))
    with pytest.raises(KeyboardInterrupt):
        world.engine.run(job)
    world.deployer.during_rollout = lambda: None
    assert world.ledger.get_environment("production").pending == job.to_message()
    with world.ledger.lease_environment("production"):  # the lease of a rollout still under way
        assert [j for j in world.deliver(events.ReconcileDue(T0)) if j.environment == "production"] == []
    redo = [j for j in world.deliver(events.ReconcileDue(T0)) if j.environment == "production"]
    assert redo == [job]
    world.run(redo + [job])  # the repair and the redelivered message
    production = world.ledger.get_environment("production")
    assert production.current.release_id == newest and production.pending is None
    assert world.deliver(events.ReconcileDue(T0)) == [] and release_id != newest


def test_a_rollout_that_fails_for_good_is_not_left_pending(world):
    world.ship("1")
    newest = world.ledger.list_releases()[0].id
    job = operations.promote(world.engine, release_id=newest, by="ana", reason="go")

    def refused():
        raise errors.PermanentError("the Role may not patch deployments")
    world.deployer.during_rollout = refused
    with pytest.raises(errors.PermanentError):
        world.engine.run(job)
    production = world.ledger.get_environment("production")
    assert production.pending is None and production.history[-1].what == "rollout failed"
    assert "may not patch" in production.history[-1].detail


def test_a_rollout_that_fails_with_not_found_is_not_left_pending_either(world):
    world.ship("1")
    newest = world.ledger.list_releases()[0].id
    job = operations.promote(world.engine, release_id=newest, by="ana", reason="go")

    def gone():
        raise errors.NotFound("no Deployment production/app")
    world.deployer.during_rollout = gone
    with pytest.raises(errors.NotFound):
        world.engine.run(job)
    assert world.ledger.get_environment("production").pending is None
    assert [j for j in world.deliver(events.ReconcileDue(T0)) if j.environment == "production"] == []


def test_an_automatic_rollout_refused_for_good_blocks_automatic_ones_until_a_manual_deploy_succeeds(world):
    def refused():
        raise errors.PermanentError("the Role may not patch deployments")
    world.deployer.during_rollout = refused
    world.deliver(world.upload("1"))
    with pytest.raises(errors.PermanentError):
        world.run(world.finish_builds())
    staging = world.ledger.get_environment("staging")
    assert "may not patch" in staging.blocked and staging.pending is None
    release_id = world.ledger.list_releases()[0].id
    assert world.ledger.get_release(release_id).status is Status.GREEN  # not the release's fault
    assert world.deliver(events.ReconcileDue(T0)) == []  # not tried again and again
    world.deployer.during_rollout = lambda: None  # the Role is fixed; the operator deploys
    world.run([operations.deploy(world.engine, "staging", release_id=release_id, by="ana")])
    staging = world.ledger.get_environment("staging")
    assert staging.blocked is None and staging.current.release_id == release_id


def test_an_operators_rollback_clears_a_rollout_a_dead_worker_left_pending(world):
    world.ship("1")
    world.ship("2")
    left = jobs.rollout("staging", world.ledger.list_releases()[0].id, by="shipbot")
    world.ledger.update_environment("staging", lambda e: e.with_(pending=left.to_message()))
    world.run([operations.rollback(world.engine, "staging", by="ana", reason="bad")])
    assert world.ledger.get_environment("staging").pending is None
    assert [j for j in world.deliver(events.ReconcileDue(T0)) if j.environment == "staging"] == []


def test_a_forced_deploy_run_twice_keeps_what_a_rollback_goes_back_to(world):
    first = world.ship("1")
    second = world.ship("2")
    job = operations.deploy(world.engine, "staging", release_id=second, by="ana", force=True)
    world.run([job, job])  # the repair and the redelivered message
    staging = world.ledger.get_environment("staging")
    assert (staging.current.release_id, staging.previous.release_id) == (second, first)


def test_concurrent_reconciles_restart_a_lost_build_once_and_give_up_after_three_losses(world):
    world.deliver(world.upload("1"))
    for lost in range(1, 4):
        world.builder.builds.clear()  # lost again
        seen = world.ledger.list_releases()[0]  # two reconciles (two instances) read the same listing
        world.engine._check_build(seen)
        world.engine._check_build(seen)
        assert len(world.builder.requests) == lost + 1  # one restart between them
        assert world.ledger.get_release(seen.id).status is Status.BUILDING
    world.builder.builds.clear()
    world.engine._check_build(world.ledger.list_releases()[0])
    release = world.ledger.list_releases()[0]
    assert release.status is Status.FAILED and "4 times" in release.reason and release.build_attempts == 1
    assert len(world.builder.requests) == 4


def test_a_tester_that_lost_its_lease_does_not_overwrite_its_successors_result(world):
    release_id, job = pushed_release(world)

    def slow_and_superseded(ref, expected):  # meanwhile its lease lapsed and another tester took over
        world.ledger.update_release(release_id, lambda r: r.with_(entry=Entry(
            T0, "smoke test restarted (its tester died)", "shipbot", "the successor")))
        return Verdict(passed=False, reason="a late, stale verdict")
    world.smoke.run = slow_and_superseded
    assert "another tester took over" in world.engine.run(job).summary
    release = world.ledger.get_release(release_id)
    assert release.status is Status.TESTING and release.reason == "" and world.notifier.messages == []
