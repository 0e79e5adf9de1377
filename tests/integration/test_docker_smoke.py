"""DockerSmokeRunner on the real Docker engine: green on the sample image, red with a reason an operator can
act on for each way an image can be wrong, and never a container left behind."""

from __future__ import annotations

import itertools

import pytest

from shared import errors, ports
from shared.adapters.local.smoke import DockerSmokeRunner
from tests import localstack

pytestmark = pytest.mark.integration
BUDGET = 90


@pytest.fixture
def runner():
    client = localstack.docker_client()
    prefix = f"shipbot-test-smoke-{localstack.SESSION}"
    yield DockerSmokeRunner(client=client, budget_seconds=BUDGET, name_prefix=prefix)
    assert [c.name for c in client.containers.list(all=True, filters={"name": prefix})] == []


def expect(image: localstack.SampleImage, **changes) -> ports.Expectation:
    fields = {"release_id": image.release_id, "model_sha256": image.model_sha256, "commit": image.commit}
    return ports.Expectation(**{**fields, **changes})


def test_the_sample_image_passes_every_step(runner):
    image = localstack.release_image("good")

    verdict = runner.run(image.ref, expect(image))

    assert verdict.passed, verdict.reason
    assert [name for name, _ in verdict.steps] == ["start", "ready", "version", "score"]
    assert 0 < sum(seconds for _, seconds in verdict.steps) <= verdict.seconds + 0.005 * len(verdict.steps)  # each rounded to ms
    assert verdict.seconds < BUDGET


def test_a_model_that_does_not_load_fails_at_once_with_model_apis_error(runner):
    image = localstack.release_image("bad-model")

    verdict = runner.run(image.ref, expect(image))

    assert not verdict.passed
    assert verdict.reason.startswith("/readyz reports the model failed to load: ")
    assert [name for name, _ in verdict.steps] == ["start", "ready"]
    assert verdict.seconds < BUDGET / 2  # noticed, not waited out


def test_another_release_in_version_fails_naming_both_releases(runner):
    image = localstack.release_image("good")

    verdict = runner.run(image.ref, expect(image, release_id="r-expected"))

    assert not verdict.passed
    assert verdict.reason == f"/version reports release {image.release_id}, expected r-expected"


@pytest.mark.parametrize(("field", "what", "attribute"), [("model_sha256", "model sha256", "model_sha256"),
                                                         ("commit", "commit", "commit")])
def test_another_model_or_commit_in_version_fails_naming_it(runner, field, what, attribute):
    image = localstack.release_image("good")

    verdict = runner.run(image.ref, expect(image, **{field: "f" * 40}))

    assert verdict.reason == f"/version reports {what} {getattr(image, attribute)}, expected {'f' * 40}"


def test_a_score_that_differs_from_the_sample_response_fails_naming_where(runner):
    image = localstack.release_image("wrong-response")

    verdict = runner.run(image.ref, expect(image))

    assert not verdict.passed
    assert verdict.reason.startswith("score differs from sample-response.json at result[3]: ")
    assert verdict.reason.endswith(" expected")


def test_a_container_that_exits_fails_with_its_last_log_lines():
    image = localstack.release_image("good")
    client = localstack.docker_client()
    runner = DockerSmokeRunner(client=client, budget_seconds=BUDGET, name_prefix="shipbot-test-smoke-exit",
                               environment={"MODEL_API_WORKERS": "-1"})  # model_api refuses it and exits

    verdict = runner.run(image.ref, expect(image))

    assert not verdict.passed
    assert verdict.reason.startswith("the container exited (code ")
    assert "MODEL_API_WORKERS" in verdict.reason


def test_an_image_that_is_not_ready_within_the_budget_fails_naming_the_budget():
    image = localstack.release_image("good")
    ticks = itertools.count(0, 7.0)  # every reading of the runner's clock is 7 s later: the budget runs out
    runner = DockerSmokeRunner(client=localstack.docker_client(), budget_seconds=20,
                               name_prefix="shipbot-test-smoke-slow", clock=lambda: next(ticks))

    verdict = runner.run(image.ref, expect(image))

    assert not verdict.passed
    assert verdict.reason.startswith("/readyz did not answer 200 within 20 s (last answer: ")


def test_an_image_that_is_not_in_the_registry_is_not_found(runner):
    with pytest.raises(errors.NotFound, match="not in the registry"):
        runner.run(f"{localstack.REGISTRY}/{localstack.REPOSITORY}@sha256:{'0' * 64}", ports.Expectation("r-x"))


# -- the quality gate's evaluation set, scored through the candidate's own route -------------------------------
def diabetes_rows(count: int) -> list[list[float]]:
    """`count` rows of the sample's held-out split (89 rows), repeated."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True)
    X_test = train_test_split(X, y, test_size=0.2, random_state=0)[1]
    return (X_test.tolist() * (count // len(X_test) + 1))[:count]


def test_an_evaluation_set_is_scored_batch_by_batch_in_row_order_after_the_smoke_test(runner):
    image = localstack.release_image("good")
    rows = diabetes_rows(1000)

    verdict = runner.run(image.ref, expect(image), evaluation=ports.Evaluation(rows, batch=128, seconds=60))

    assert verdict.passed, verdict.reason
    assert [name for name, _ in verdict.steps] == ["start", "ready", "version", "score", "evaluate"]
    assert len(verdict.predictions) == 1000
    assert verdict.predictions[:89] == verdict.predictions[89:178]  # the set repeats every 89 rows: order is kept


def test_an_evaluation_set_the_model_cannot_take_fails_naming_the_rows(runner):
    image = localstack.release_image("good")
    rows = [[0.1] * 9] * 10  # the model takes 10 features

    verdict = runner.run(image.ref, expect(image), evaluation=ports.Evaluation(rows, batch=4, seconds=60))

    assert not verdict.passed and verdict.predictions is None
    assert verdict.reason.startswith("evaluation rows 1-4: POST answered 422: ")
    assert "each row must have 10 features; got 9" in verdict.reason
