"""Dynamic batching: /score requests waiting at the same moment go to the entry script's run_batch() together,
and each still gets exactly its own answer."""

from __future__ import annotations

import asyncio

import joblib
import numpy as np
import orjson
import pytest

from model_api.batching import Batcher

ROW = [0.01] * 10


class Picky:
    """An estimator that cannot score a row holding 13.0, to show one request's failure stays its own."""

    n_features_in_ = 10

    def predict(self, x: np.ndarray) -> np.ndarray:
        if (x == 13.0).any():
            raise ValueError("13 is unlucky")
        return x.sum(axis=1)


def body(rows: list[list[float]]) -> bytes:
    return orjson.dumps({"data": rows})


class Batches:
    """Batches scored, and requests in them, from /metrics since this was made (the registry is per process)."""

    def __init__(self, service, metric_value) -> None:
        self.service, self.metric_value = service, metric_value
        self.start = self.read()

    def read(self) -> tuple[float, float]:
        samples = self.service.metrics()
        return (self.metric_value(samples, "model_api_batch_requests_count"),
                self.metric_value(samples, "model_api_batch_requests_sum"))

    def since(self) -> tuple[float, float]:
        now = self.read()
        return now[0] - self.start[0], now[1] - self.start[1]


def test_concurrent_requests_are_scored_in_one_batch_and_each_gets_its_own_prediction(serve, ridge, metric_value):
    service = serve()
    counted = Batches(service, metric_value)
    rows = [[[i / 100 + j / 1000 for j in range(10)]] for i in range(12)]

    responses = service.post_many("/score", [body(r) for r in rows])

    assert [r.status_code for r in responses] == [200] * 12
    for response, r in zip(responses, rows, strict=True):
        np.testing.assert_allclose(response.json()["result"], ridge.predict(np.asarray(r)), rtol=0, atol=1e-6)
    assert counted.since() == (1, 12)
    scored = [line for line in service.access_log() if line["route"] == "/score"]
    assert len({line["request_id"] for line in scored}) == 12  # one access line per request


def test_requests_of_several_rows_are_split_back_by_their_own_row_counts(serve, ridge):
    service = serve()
    rows = [[ROW] * 3, [[0.02] * 10], [[-0.01] * 10] * 5]

    responses = service.post_many("/score", [body(r) for r in rows])

    for response, r in zip(responses, rows, strict=True):
        assert len(response.json()["result"]) == len(r)
        np.testing.assert_allclose(response.json()["result"], ridge.predict(np.asarray(r)), rtol=0, atol=1e-6)


def test_a_bad_body_in_a_batch_fails_alone(serve, ridge, assert_error):
    service = serve()
    bodies = [body([ROW]), b"not json", body([ROW[:5]]), body([[0.02] * 10]), b'{"rows": []}']

    good, not_json, too_narrow, other, no_data = service.post_many("/score", bodies)

    assert "not valid JSON" in assert_error(not_json, 400, "BadRequest")
    assert "10 features" in assert_error(too_narrow, 422, "InvalidInput")
    assert '"data" key' in assert_error(no_data, 422, "InvalidInput")
    np.testing.assert_allclose(good.json()["result"], ridge.predict(np.asarray([ROW])), atol=1e-6)
    np.testing.assert_allclose(other.json()["result"], ridge.predict(np.asarray([[0.02] * 10])), atol=1e-6)


def test_a_row_the_model_cannot_score_fails_only_its_own_request(serve, tmp_path, assert_error):
    model_dir = tmp_path / "picky"
    model_dir.mkdir()
    joblib.dump(Picky(), model_dir / "model.joblib")
    (model_dir / "sample-request.json").write_bytes(body([ROW]))
    service = serve(model_dir=model_dir)

    ok, unlucky, also_ok = service.post_many("/score", [body([[1.0] * 10]), body([[13.0] * 10]),
                                                        body([[2.0] * 10, [3.0] * 10])])

    assert ok.json() == {"result": [10.0]}
    assert also_ok.json() == {"result": [20.0, 30.0]}
    assert "failed to score" in assert_error(unlucky, 500, "ScoringFailed")


def test_batch_max_requests_bounds_every_batch(serve, metric_value):
    service = serve(batch_max_requests=3)
    counted = Batches(service, metric_value)

    responses = service.post_many("/score", [body([ROW])] * 7)

    assert [r.status_code for r in responses] == [200] * 7
    assert counted.since() == (3, 7)  # 3 + 3 + 1


def test_a_body_bigger_than_batch_max_bytes_is_scored_on_its_own(serve, metric_value):
    small, big = body([ROW]), body([ROW] * 50)
    service = serve(batch_max_bytes=len(small) * 3)
    counted = Batches(service, metric_value)

    responses = service.post_many("/score", [small, small, big, small])

    assert [len(r.json()["result"]) for r in responses] == [1, 1, 50, 1]
    assert counted.since() == (3, 4)  # [small, small], [big], [small]


def test_batch_max_requests_1_turns_batching_off(serve, ridge, metric_value):
    service = serve(batch_max_requests=1)
    counted = Batches(service, metric_value)

    responses = service.post_many("/score", [body([ROW])] * 4)

    assert [r.status_code for r in responses] == [200] * 4
    assert counted.since() == (0, 0)


def test_a_script_without_run_batch_scores_each_request_alone(serve, custom_script, metric_value):
    service = serve(entry_script=custom_script)
    counted = Batches(service, metric_value)

    responses = service.post_many("/score", [body([[1, 2]]), body([[3, 4]])])

    assert [r.json() for r in responses] == [{"result": [3]}, {"result": [7]}]
    assert counted.since() == (0, 0)


BATCH_SCRIPT = '''
import time


def init():
    pass


def run(raw_data):
    return {"result": raw_data}


def run_batch(raw_batch):
    if "spin" in raw_batch:  # pure Python, so SIGALRM can interrupt it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pass
    if "short" in raw_batch:
        return [{"result": "only one"}]
    return [{"result": raw, "batch": len(raw_batch)} for raw in raw_batch]
'''


def test_a_batch_that_overruns_the_deadline_answers_504_to_each_of_its_requests(serve, script, empty_dir,
                                                                                assert_error):
    service = serve(model_dir=empty_dir, entry_script=script("batch.py", BATCH_SCRIPT), scoring_timeout_s=0.2)

    responses = service.post_many("/score", [b"a", b"spin", b"b"])

    for response in responses:
        assert_error(response, 504, "ScoringTimeout")
    assert service.post_many("/score", [b"x", b"y"])[1].json() == {"result": "y", "batch": 2}  # still serving


def test_a_run_batch_that_returns_the_wrong_number_of_results_answers_500_to_each(serve, script, empty_dir,
                                                                                  assert_error):
    service = serve(model_dir=empty_dir, entry_script=script("batch.py", BATCH_SCRIPT))

    for response in service.post_many("/score", [b"short", b"b"]):
        assert_error(response, 500, "ScoringFailed")


def test_a_run_batch_that_fails_its_warm_up_keeps_the_model_from_ready(serve, script, diabetes_dir):
    source = BATCH_SCRIPT + "\n\ndef run_batch(raw_batch):\n    raise RuntimeError('batching is broken')\n"
    service = serve(entry_script=script("batch.py", source))

    response = service.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "failed", "error": "RuntimeError: batching is broken"}


# -- the Batcher itself ----------------------------------------------------------------------------------------
def test_the_batcher_skips_a_request_whose_client_went_away_and_answers_the_rest():
    calls: list[list[str]] = []

    def score(items: list[str]) -> list[str]:
        calls.append(items)
        return [item.upper() for item in items]

    async def scenario() -> list[str]:
        batcher = Batcher(score, max_items=8, max_bytes=1000)
        futures = [batcher.submit(item, 1) for item in "abc"]
        futures[1].cancel()
        return [await futures[0], await futures[2]]

    assert asyncio.run(scenario()) == ["A", "C"]
    assert calls == [["a", "b", "c"]]


def test_the_batcher_gives_every_request_of_a_batch_the_error_when_scoring_raises():
    def score(items: list[str]) -> list[str]:
        raise OSError("disk on fire")

    async def scenario() -> list[BaseException | str]:
        batcher = Batcher(score, max_items=8, max_bytes=1000)
        futures = [batcher.submit(item, 1) for item in "ab"]
        return await asyncio.gather(*futures, return_exceptions=True)

    results = asyncio.run(scenario())
    assert [type(r) for r in results] == [OSError, OSError]


@pytest.mark.parametrize("results", [["only one"], ["one", "two", "three"]], ids=["too-few", "too-many"])
def test_the_batcher_never_leaves_a_request_waiting_when_results_do_not_match(results):
    async def scenario() -> list[BaseException | str]:
        batcher = Batcher(lambda items: results, max_items=8, max_bytes=1000)
        return await asyncio.gather(*(batcher.submit(item, 1) for item in "ab"), return_exceptions=True)

    assert [type(r) for r in asyncio.run(scenario())] == [RuntimeError, RuntimeError]
