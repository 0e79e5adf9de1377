"""Chains of environments over the in-memory fakes: each rule (on_green, schedule, manual) and each gate (soak,
approval, freeze), and the bot routing events to the applications of a fleet."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from shared import errors, events, fleet, operations
from shared.bot import Bot
from shared.engine import Engine
from test_engine import REPO, World

CHAIN = """
apps:
  - name: diabetes
    image: shipbot/app
    models: [diabetes]
    environments:
      - {name: dev, target: {kind: local, port: 8091}, rule: on_green}
      - {name: qa, target: {kind: local, port: 8092}, rule: on_green, approval: true}
      - {name: prod, target: {kind: local, port: 8093}, rule: schedule, schedule: "0 0 2 * * *",
         time_zone: Europe/Paris, soak: 1h}
"""


@pytest.fixture
def world() -> World:
    world = World()
    chain = tuple(fleet.parse(CHAIN).apps[0].environments)
    world.engine = Engine(world.engine.ports, dataclasses.replace(world.engine.config, chain=chain, app="diabetes"))
    return world


def test_a_green_release_goes_to_the_first_environment_and_waits_for_its_approval(world):
    release = world.ship("1")
    assert world.ledger.get_environment("dev").current.release_id == release
    assert world.ledger.get_environment("qa").current is None  # not approved
    assert world.run(world.deliver(events.ReconcileDue(world.clock()))) == []

    approved, job = operations.approve(world.engine, "qa", release, by="carol", reason="QA signed off")
    assert approved.approved == ("qa",) and approved.history[-1].by == "carol"
    assert job is not None and job.app == "" and job.environment == "qa"
    world.run([job])
    assert world.ledger.get_environment("qa").current.release_id == release


def test_the_rollout_says_why_the_next_environment_waits(world):
    world.deliver(world.upload("1"))
    summaries = world.run(world.finish_builds())
    release = world.ledger.list_releases()[0].id
    assert summaries[-1] == f"{release} runs on dev; qa waits: release {release} is not approved for qa (shipbot approve)"
    assert world.engine.waiting("qa") == f"release {release} is not approved for qa (shipbot approve)"
    assert world.engine.waiting("dev") == ""  # no gates
    world.run([operations.approve(world.engine, "qa", release, by="carol", reason="ok")[1]])
    assert world.engine.waiting("qa") == ""
    assert world.engine.waiting("prod") == f"release {release} has soaked 0 of 60 minutes on qa"


def test_a_schedule_fires_once_after_the_soak_however_many_slots_were_missed(world):
    release = world.ship("1")
    world.engine.schedules_due()  # the first look starts the count
    world.run([operations.approve(world.engine, "qa", release, by="carol", reason="ok")[1]])
    assert world.engine.schedules_due().jobs == []  # no slot since
    world.clock.now += timedelta(days=3)  # three nights missed
    (job,) = world.engine.schedules_due().jobs
    assert job.environment == "prod" and job.by == "schedule"
    assert world.engine.schedules_due().jobs == []  # fired once
    world.run([job])
    assert world.ledger.get_environment("prod").current.release_id == release


def test_a_slots_rollout_that_was_lost_is_redone_by_reconcile(world):
    release = world.ship("1")
    world.engine.schedules_due()
    world.run([operations.approve(world.engine, "qa", release, by="carol", reason="ok")[1]])
    world.clock.now += timedelta(days=1)
    (lost,) = world.deliver(events.PromotionDue(world.clock()))  # the slot is spent; the job never reaches the queue
    again = [job for job in world.deliver(events.ReconcileDue(world.clock())) if job.environment == "prod"]
    assert again == [lost]
    world.run(again)
    assert world.ledger.get_environment("prod").current.release_id == release
    assert world.ledger.get_environment("prod").pending is None
    assert world.deliver(events.ReconcileDue(world.clock())) == []


def test_a_release_that_has_not_soaked_is_not_scheduled(world):
    release = world.ship("1")
    world.engine.schedules_due()
    night = world.clock.now.replace(hour=0, minute=59, second=0) + timedelta(days=1)  # 01:59 Paris
    world.clock.now = night - timedelta(minutes=30)
    world.run([operations.approve(world.engine, "qa", release, by="carol", reason="ok")[1]])
    world.clock.now = night
    assert world.engine.schedules_due().jobs == []  # 30 minutes on qa, the soak is an hour
    assert world.ledger.get_environment("prod").current is None


def test_nothing_automatic_deploys_during_a_freeze(world):
    frozen = fleet.parse(CHAIN.replace("rule: on_green, approval: true",
                                       'rule: on_green, freeze: [{start: "2020-01-01T00:00:00Z", '
                                       'end: "2030-01-01T00:00:00Z", reason: audit}]')).apps[0].environments
    world.engine = Engine(world.engine.ports, dataclasses.replace(world.engine.config, chain=tuple(frozen)))
    release = world.ship("1")
    assert world.ledger.get_environment("dev").current.release_id == release
    assert world.ledger.get_environment("qa").current is None
    with pytest.raises(errors.Refused, match="needs no approval"):
        operations.approve(world.engine, "qa", release, by="carol", reason="ok")
    world.run([operations.deploy(world.engine, "qa", release_id=release, by="carol", reason="by hand")])
    assert world.ledger.get_environment("qa").current.release_id == release  # a person's deploy is not gated


def test_the_bot_routes_each_event_to_its_application_and_stamps_their_jobs(world):
    other = World()
    engines = {"diabetes": world.engine, "churn": other.engine}
    two = CHAIN + """
  - name: churn
    image: shipbot/churn
    models: [churn]
    source: {repository: "https://github.com/contoso/churn", branch: main}
    environments:
      - {name: staging, target: {kind: local, port: 8094}, rule: on_green}
"""
    other.engine = Engine(other.engine.ports, dataclasses.replace(
        other.engine.config, repository="registry.test/shipbot/churn", app="churn",
        allowed_repositories=frozenset({"registry.test/shipbot/churn"}),
        chain=tuple(fleet.parse(two).apps[1].environments)))
    engines["churn"] = other.engine
    world.ledger.put_fleet(two, by="alice", at=world.clock())
    bot = Bot(ledger=world.ledger, default=fleet.parse(CHAIN), engine_for=lambda app: engines[app.name],
              root="diabetes")

    other.models.put("churn", "1", {"model.joblib": b"c"}, uploaded=other.clock())
    routed = bot.handle(dataclasses.replace(world.event_model("1"), model_name="churn"))
    assert list(routed.outcomes) == ["churn"] and other.ledger.list_releases() and not world.ledger.list_releases()

    unknown = bot.handle(world.image_event("shipbot/nobody", "v1", "sha256:" + "ab" * 32))
    assert "no application's" in unknown.summary
    other.registry.push("shipbot/churn", "v1", "sha256:" + "cd" * 32)
    assert bot.handle(world.image_event("shipbot/churn", "v1", "sha256:" + "cd" * 32)).outcomes.keys() == {"churn"}
    jobs = bot.handle(events.ReconcileDue(world.clock())).jobs
    assert {job.app for job in jobs} <= {"diabetes", "churn"} and jobs
    with pytest.raises(errors.NotFound, match="there are 2 applications"):
        bot.engine(None)
    assert bot.engine("churn") is other.engine and REPO != other.engine.config.repository
