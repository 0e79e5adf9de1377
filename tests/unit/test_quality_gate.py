"""The quality gate over the in-memory fakes: a release whose image declares an evaluation is scored on the
repository's evaluation set after its smoke test and compared with the release in production; a worse one
fails with both figures and goes nowhere, an operator may override it with a reason, and a gate that cannot
run (its data set changed, missing, unreadable; a metric that is not a number) fails the release."""

from __future__ import annotations

import math

import pytest

from shared import errors, evaluation, operations
from shared.releases import Status
from test_engine import T0, World

ROWS = [[float(i), float(i % 3)] for i in range(1, 41)]
CSV = ("x1,x2,y\n" + "".join(f"{a},{b},{a + b}\n" for a, b in ROWS)).encode()  # y = x1 + x2: `sum` is exact


def spec(content: bytes = CSV, **changes) -> str:
    import hashlib

    return evaluation.Spec(**{"data": "eval.csv", "label": "y", "metric": "rmse", "direction": "lower",
                              "tolerance": 0.5, "batch": 16, "seconds": 60.0,
                              "sha256": hashlib.sha256(content).hexdigest(), **changes}).to_label()


@pytest.fixture
def world() -> World:
    world = World()
    world.source.commit("c1" * 20, at=T0, files={"eval.csv": CSV})
    world.builder.labels = {evaluation.LABEL: spec()}
    return world


def ship(world: World, version: str, model) -> str:
    world.smoke.model = model
    return world.ship(version)


def to_production(world: World, release_id: str) -> None:
    world.run([operations.promote(world.engine, release_id=release_id, by="ops", reason="test")])
    assert world.ledger.get_environment("production").current.release_id == release_id


def test_a_first_release_passes_on_its_own_figure_and_keeps_it(world):
    release = world.ledger.get_release(ship(world, "1", sum))

    assert release.status is Status.GREEN and release.deployed == ("staging",)
    figures = release.evaluation
    assert (figures.metric, figures.value, figures.rows, figures.passed, figures.baseline) == ("rmse", 0.0, 40, True, None)
    assert "nothing in production to compare with" in figures.reason
    (ref, sent), = world.smoke.evaluations
    assert ref == release.ref and sent.rows == ROWS and sent.batch == 16


def test_a_release_worse_than_production_fails_with_both_figures_and_goes_nowhere(world):
    first = ship(world, "1", sum)
    to_production(world, first)

    second = world.ledger.get_release(ship(world, "2", lambda row: sum(row) + 2.0))

    assert second.status is Status.FAILED and second.deployed == ()
    assert second.reason == (f"quality gate: rmse 2 against production's ({first}) 0: worse by 2 (lower is better, "
                             "tolerance 0.5) on 40 rows of eval.csv")
    assert (second.evaluation.value, second.evaluation.baseline, second.evaluation.baseline_release) == (2.0, 0.0, first)
    assert world.ledger.get_environment("staging").current.release_id == first
    assert (f"{second.id} quality gate failed", second.reason, True) in world.notifier.messages


def test_a_release_within_the_tolerance_passes_against_productions_figure(world):
    to_production(world, ship(world, "1", sum))

    second = world.ledger.get_release(ship(world, "2", lambda row: sum(row) + 0.25))

    assert second.status is Status.GREEN and second.evaluation.baseline == 0.0
    assert world.ledger.get_environment("staging").current.release_id == second.id


def test_an_override_lets_a_failed_release_go_on_and_the_ledger_says_who_and_why(world):
    to_production(world, ship(world, "1", sum))
    failed = ship(world, "2", lambda row: sum(row) + 3.0)

    release, job = operations.override(world.engine, failed, by="alice", reason="the metric drifts; checked by hand")
    world.run([job])

    release = world.ledger.get_release(failed)
    assert release.status is Status.GREEN and release.reason == ""
    assert (release.evaluation.passed, release.evaluation.overridden_by) == (False, "alice")
    assert any(e.what == "quality gate overridden" and e.by == "alice" for e in release.history)
    assert world.ledger.get_environment("staging").current.release_id == failed


@pytest.mark.parametrize("release_status", ["green", "smoke-failed"])
def test_only_a_release_the_gate_failed_can_be_overridden(world, release_status):
    if release_status == "smoke-failed":
        world.builder.labels = {}
        world.deliver(world.upload("1"))
        build_id, = world.builder.builds
        digest = world.builder.succeed(build_id, world.registry)
        world.smoke.failures[f"{world.engine.config.repository}@{digest}"] = "boom"
        world.run(world.deliver(world.image_event("shipbot/app", world.builder.requests[build_id].tag, digest)))
        release_id = world.ledger.list_releases()[0].id
    else:
        release_id = ship(world, "1", sum)

    with pytest.raises(errors.Refused, match="only a release the quality gate failed can be overridden"):
        operations.override(world.engine, release_id, by="alice", reason="why not")
    with pytest.raises(errors.InvalidEvent, match="needs a reason"):
        operations.override(world.engine, release_id, by="alice", reason=" ")


def test_a_metric_that_is_not_a_number_fails_the_release(world):
    release = world.ledger.get_release(ship(world, "1", lambda row: math.inf))

    assert release.status is Status.FAILED and release.deployed == ()
    assert "not a number" in release.reason and release.evaluation.value is None


@pytest.mark.parametrize("files, label, says", [
    ({"eval.csv": CSV + b"41,2,43\n"}, None, "is not the one the image was built with"),
    ({}, None, "the evaluation set: commit c1c1c1c1c1c1 has no file eval.csv"),
    ({"eval.csv": b"x1,x2\n1,2\n"}, spec(b"x1,x2\n1,2\n"), "has no column 'y'"),
    ({"eval.csv": CSV}, "{not json", "label is unusable"),
], ids=["changed", "missing", "no-label-column", "bad-label"])
def test_a_gate_that_cannot_run_fails_the_release_and_says_why(world, files, label, says):
    world.source.commit("c1" * 20, at=T0, files=files)
    if label is not None:
        world.builder.labels = {evaluation.LABEL: label}

    release = world.ledger.get_release(ship(world, "1", sum))

    assert release.status is Status.FAILED and release.deployed == ()
    assert release.reason.startswith("quality gate: ") and says in release.reason


def test_predictions_that_do_not_match_the_rows_fail_the_gate_with_the_reason(world):
    release = world.ledger.get_release(ship(world, "1", lambda row: "a label"))

    assert release.status is Status.FAILED
    assert "rmse of the candidate's answers: prediction row 0: 'a label' is not a number" in release.reason


def test_a_release_without_an_evaluation_is_not_scored(world):
    world.builder.labels = {}

    release = world.ledger.get_release(ship(world, "1", sum))

    assert release.status is Status.GREEN and release.evaluation is None and world.smoke.evaluations == []


def test_a_release_document_with_its_figures_reads_back_equal(world):
    release = world.ledger.get_release(ship(world, "1", sum))

    assert type(release).from_json(release.to_json()) == release


def test_an_evaluation_set_that_travels_with_the_model_version_is_read_from_it_and_compared_by_its_rows(world):
    world.source.commit("c1" * 20, at=T0, files={})  # nothing in the repository
    world.builder.labels = {evaluation.LABEL: spec(data="model:eval.csv", sha256="")}
    world.smoke.model = sum
    world.models.put("diabetes", "1", {"model.joblib": b"one", "eval.csv": CSV}, uploaded=world.clock())
    world.deliver(world.event_model("1"))
    world.run(world.finish_builds())
    first = world.ledger.list_releases()[0]
    to_production(world, first.id)

    world.smoke.model = lambda row: sum(row) + 2.0
    world.models.put("diabetes", "2", {"model.joblib": b"two", "eval.csv": CSV}, uploaded=world.clock())
    world.deliver(world.event_model("2"))
    world.run(world.finish_builds())
    second = world.ledger.list_releases()[0]

    assert first.evaluation.passed and first.evaluation.data == "model:eval.csv"
    assert second.status is Status.FAILED and second.evaluation.baseline_release == first.id  # the same rows


def test_a_model_version_without_its_evaluation_set_fails_the_gate(world):
    world.builder.labels = {evaluation.LABEL: spec(data="model:eval.csv", sha256="")}

    release = world.ledger.get_release(ship(world, "1", sum))

    assert release.status is Status.FAILED
    assert release.reason == "quality gate: the evaluation set: model diabetes/1 has no file eval.csv"


def test_the_fleets_gate_applies_to_an_image_whose_shipbot_toml_declares_none(world):
    import dataclasses

    from shared import fleet

    declared = fleet.parse("""
apps:
  - name: app
    image: shipbot/app
    evaluate: {data: eval.csv, label: y, metric: rmse, tolerance: 0.5, batch: 16}
    environments:
      - {name: staging, target: {kind: local, port: 8081}, rule: on_green}
""").apps[0].evaluate
    world.builder.labels = {}
    world.engine.config = dataclasses.replace(world.engine.config, evaluate=evaluation.Spec.declared(declared))

    release = world.ledger.get_release(ship(world, "1", sum))

    assert release.evaluation is not None and release.evaluation.passed and release.evaluation.rows == 40
    assert world.smoke.evaluations[0][1].batch == 16


def test_a_fleet_gate_that_makes_no_sense_is_refused_with_its_line():
    from shared import fleet

    with pytest.raises(fleet.FleetError) as refused:
        fleet.parse("""
apps:
  - name: app
    image: shipbot/app
    evaluate: {data: eval.csv, label: y, metric: mape}
    environments:
      - {name: staging, target: {kind: local, port: 8081}, rule: on_green}
""")

    assert "line 5, apps[app].evaluate.metric" in str(refused.value)


def test_a_prediction_that_overflows_the_metric_fails_the_gate_instead_of_the_job(world):
    release = world.ledger.get_release(ship(world, "1", lambda row: 1e200))

    assert release.status is Status.FAILED
    assert release.reason.startswith("quality gate: rmse of the candidate's answers: ")


def test_a_gate_that_could_not_run_can_be_overridden(world):
    world.source.commit("c1" * 20, at=T0, files={})  # the evaluation set is missing at the commit
    failed = ship(world, "1", sum)
    assert world.ledger.get_release(failed).evaluation.reason.startswith("the evaluation set: ")

    release, job = operations.override(world.engine, failed, by="alice", reason="the set moved; checked by hand")
    world.run([job])

    assert world.ledger.get_environment("staging").current.release_id == failed


def other_rows(world: World) -> list[list[float]]:
    """A commit whose evaluation set is another than production was scored on (one row more)."""
    other = CSV + b"50,1,51\n"
    world.source.commit("c2" * 20, at=T0, files={"eval.csv": other})
    world.builder.labels = {evaluation.LABEL: spec(other)}
    return ROWS + [[50.0, 1.0]]


def test_on_other_rows_than_productions_figure_production_is_scored_now_and_a_worse_release_fails(world):
    first = world.ledger.get_release(ship(world, "1", sum))
    to_production(world, first.id)
    world.smoke.models[first.ref] = sum  # what production's own image answers
    rows = other_rows(world)

    release = world.ledger.get_release(ship(world, "2", lambda row: sum(row) + 3.0))

    assert release.status is Status.FAILED
    assert release.reason == (f"quality gate: rmse 3 against production's ({first.id}, scored now) 0: worse by 3 "
                              "(lower is better, tolerance 0.5) on 41 rows of eval.csv")
    assert (release.evaluation.baseline, release.evaluation.baseline_release) == (0.0, first.id)
    assert (first.ref, rows) in [(ref, sent.rows) for ref, sent in world.smoke.evaluations]
    assert world.ledger.get_release(first.id).evaluation.rows == 40  # production's own record is left as it was


def test_on_the_same_rows_production_is_not_scored_again(world):
    first = world.ledger.get_release(ship(world, "1", sum))
    to_production(world, first.id)

    ship(world, "2", lambda row: sum(row) + 0.25)

    assert [ref for ref, _ in world.smoke.evaluations].count(first.ref) == 1  # its own smoke test, once


def test_when_productions_image_cannot_be_scored_the_release_passes_on_its_own_figure_and_says_why(world):
    first = world.ledger.get_release(ship(world, "1", sum))
    to_production(world, first.id)
    world.smoke.failures[first.ref] = "the image is gone from the registry"
    other_rows(world)

    release = world.ledger.get_release(ship(world, "2", lambda row: sum(row) + 3.0))

    assert release.status is Status.GREEN and release.evaluation.baseline is None
    assert (f"production's {first.id} was not scored on these rows with rmse: the image is gone from the registry"
            in release.evaluation.reason)


@pytest.mark.parametrize("changes", [{"batch": 0}, {"batch": "5"}, {"seconds": -1}, {"tolerance": float("nan")},
                                     {"label": ""}])
def test_an_image_label_with_unusable_numbers_fails_the_gate_not_the_job(world, changes):
    world.builder.labels = {evaluation.LABEL: spec().replace("}", "") + "," + ",".join(
        f'"{k}":{__import__("json").dumps(v)}' for k, v in changes.items()) + "}"}

    release = world.ledger.get_release(ship(world, "1", sum))

    assert release.status is Status.FAILED and "label is unusable" in release.reason
