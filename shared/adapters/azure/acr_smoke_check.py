"""The smoke check that AcrTaskSmokeRunner's ACR Task runs in its second step, against the release image's container
that the first step started detached (reachable as `app`). Standard library only, so that it runs on any
Python: in ShipBot's check image for an image that declares its smoke contract (the release image needs no
Python then), in the release image itself for model_api (no contract label: its sample files are inside it).

Invoked as `python -c "import base64,sys;exec(base64.b64decode(sys.argv[1]))" <this file, base64> <config>`,
where config is base64 JSON: {"url", "budget", "release_id", "model_sha256", "commit"} and the contract
(shared.contract: "ready_path", "identity_path", "score_path", "request", "expect_status", "expect_json",
"tolerance", "expect_keys", "ready_seconds", "request_seconds", "own"), or "model_dir" to read the samples
from; with "evaluation" (a file of the run's source), it then scores the quality gate's evaluation set. It waits for the readiness path, checks the identity route against the expectation, POSTs the sample
request and checks the answer as DockerSmokeRunner does (shared.adapters.local.smoke), then prints one line
`SHIPBOT-SMOKE {"passed": ..., "reason": ..., "steps": [[name, seconds], ...]}` and exits 0 when it passed, 1
when it did not.
"""

import base64
import json
import math
import sys
import time
import urllib.error
import urllib.request

MARKER = "SHIPBOT-SMOKE"
PREDICTIONS = "SHIPBOT-PREDICTIONS"
REL_TOLERANCE, ABS_TOLERANCE = 1e-6, 1e-12
POLL_SECONDS = 0.5


def main(argv):
    config = json.loads(base64.b64decode(argv[-1]))
    started = mark = time.monotonic()
    deadline = started + float(config["budget"])
    steps = []

    def step(name):
        nonlocal mark
        now = time.monotonic()
        steps.append([name, round(now - mark, 3)])
        mark = now

    reason = check(config, deadline, step)
    print(MARKER + " " + json.dumps({"passed": not reason, "reason": reason, "steps": steps}), flush=True)
    return 0 if not reason else 1


def check(config, deadline, step):
    url, budget = config["url"].rstrip("/"), float(config["budget"])
    sample, wanted = config.get("request"), config.get("expect_json")
    if not config.get("own"):  # model_api: the sample files travel in its model folder
        model_dir = config.get("model_dir") or "/var/azureml-app/model"
        try:
            with open(f"{model_dir}/sample-request.json", "rb") as f:
                sample = json.load(f)
            wanted = read_response(f"{model_dir}/sample-response.json")
        except OSError as e:
            return f"the image has no {e.filename}: nothing to smoke-test with"
        except ValueError as e:
            return f"the image's sample files are unusable: {short(str(e))}"

    ready_budget = min(budget, float(config.get("ready_seconds") or budget))
    reason = await_ready(url, config.get("ready_path") or "/readyz", min(deadline, time.monotonic() + ready_budget),
                         ready_budget)
    step("ready")
    if reason:
        return reason
    path = config.get("identity_path", "/version")
    reason = check_version(url, path, config, timeout=min(10.0, deadline - time.monotonic())) if path else ""
    step("version")
    if reason:
        return reason
    left = deadline - time.monotonic()
    reason = score(url, config, sample, wanted, timeout=min(left, float(config.get("request_seconds") or left)),
                   budget=budget)
    step("score")
    if reason or not config.get("evaluation"):
        return reason
    reason = evaluate(f"{url}{config.get('score_path') or '/score'}", config["evaluation"])
    step("evaluate")
    return reason


def evaluate(url, path):
    """The quality gate's evaluation set (a JSON file of the run's source, {"rows", "batch", "seconds"}) POSTed
    batch by batch; the answers printed as `SHIPBOT-PREDICTIONS {"start": i, "predictions": [...]}` lines (a
    batch a line), which the runner joins in row order. As shared.adapters.local.smoke.evaluate."""
    try:
        with open(path, "rb") as f:
            spec = json.load(f)
        rows, batch, seconds = spec["rows"], int(spec["batch"]), float(spec["seconds"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"the evaluation set {path} is unusable: {type(e).__name__}"
    deadline = time.monotonic() + seconds
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        where = f"evaluation rows {start + 1}-{start + len(chunk)}"
        left = deadline - time.monotonic()
        if left <= 0:
            return f"{where}: the evaluation took longer than its {seconds:g} s"
        request = urllib.request.Request(url, data=json.dumps({"data": chunk}).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        status, body = send(request, left)
        if status is None:
            return f"{where}: POST did not answer: {body}"
        if status != 200:
            return f"{where}: POST answered {status}: {short(body)}"
        try:
            result = json.loads(body).get("result")
        except (ValueError, AttributeError):
            result = None
        if not isinstance(result, list):
            return f"{where}: the answer has no 'result' list"
        if len(result) != len(chunk):
            return f"{where}: the answer holds {len(result)} predictions for {len(chunk)} rows"
        print(PREDICTIONS + " " + json.dumps({"start": start, "predictions": result}), flush=True)
    return ""


def await_ready(url, path, deadline, budget):
    last = "no answer"
    while True:
        status, body = get(f"{url}{path}", timeout=2)
        if status == 200:
            return ""
        if status is not None:
            last = f"{status} {short(body)}"
            state = as_dict(body).get("status")
            if state == "failed":
                return f"{path} reports the model failed to load: {short(str(as_dict(body).get('error')))}"
        if time.monotonic() >= deadline:
            return f"{path} did not answer 200 within {budget:g} s (last answer: {last})"
        time.sleep(POLL_SECONDS)


def check_version(url, path, config, timeout):
    """As shared.contract.identity_mismatch: field by field for model_api, the release or commit for an app."""
    status, body = get(f"{url}{path}", timeout=max(timeout, 0.1))
    if status is None:
        return f"{path} did not answer: {body}"
    if status != 200:
        return f"{path} answered {status}: {short(body)}"
    version = as_dict(body)
    if config.get("own"):
        wanted = {config.get("release_id"), config.get("commit")} - {None}
        if wanted and not wanted & {v for v in version.values() if isinstance(v, str)}:
            return f"{path} names neither the release {config.get('release_id')} nor the commit {config.get('commit')}"
        return ""
    for what, field, key in (("release", "release_id", "release_id"), ("model sha256", "model_sha256", "model_sha256"),
                             ("commit", "git_commit", "commit")):
        wanted = config.get(key)
        if wanted is not None and version.get(field) != wanted:
            return f"{path} reports {what} {version.get(field)}, expected {wanted}"
    return ""


def score(url, config, sample, wanted, timeout, budget):
    path, expect_status = config.get("score_path") or "/score", int(config.get("expect_status") or 200)
    what = f"POST {path}"
    if timeout <= 0:
        return f"no time left for {what} within {budget:g} s"
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(sample).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    status, body = send(request, timeout)
    if status is None:
        return f"{what} did not answer: {body}"
    if status != expect_status:
        return f"{what} answered {status}, expected {expect_status}: {short(body)}"
    keys = config.get("expect_keys") or []
    if wanted is None and not keys and config.get("own"):
        return ""
    try:
        scored = json.loads(body)
    except ValueError:
        return f"{what} answered something that is not JSON: {short(body)}"
    missing = [key for key in keys if not isinstance(scored, dict) or key not in scored]
    if missing:
        return f"{what} answered without {', '.join(repr(k) for k in missing)}"
    if wanted is None:  # model_api with no sample response (an MLflow model): one prediction per row
        why = "" if config.get("own") else per_row(scored, sample)
        return f"{what}: {why}" if why else ""
    tolerance = config.get("tolerance")  # 0 is a tolerance too: exact numbers
    difference = first_difference(scored, wanted, rel_tol=REL_TOLERANCE if tolerance is None else float(tolerance))
    return f"score differs from sample-response.json at {difference}" if difference else ""


def read_response(path):
    """model_api's sample response; None when the model came without one (an MLflow model)."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def per_row(scored, sample):
    """shared.contract.per_row's rule: one prediction per row of the sample."""
    rows = sample.get("data") if isinstance(sample, dict) else None
    result = scored.get("result") if isinstance(scored, dict) else None
    if not isinstance(result, list):
        return "the answer has no 'result' list: " + short(json.dumps(scored), 40)
    if isinstance(rows, list) and len(result) != len(rows):
        return f"'result' holds {len(result)} predictions for {len(rows)} rows"
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if any(not (number(v) or isinstance(v, (str, list))) for v in result) or \
            any(number(v) and not math.isfinite(v) for v in result):
        return "'result' holds something that is not a prediction: " + short(json.dumps(result), 40)
    return ""


def get(url, timeout):
    return send(urllib.request.Request(url), timeout)


def send(request, timeout):
    """(status, body text); (None, the error's type name) when nothing answered."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (OSError, ValueError) as e:
        return None, type(e).__name__


def first_difference(got, wanted, path="", rel_tol=REL_TOLERANCE):
    """As shared.contract.first_difference (tests/unit checks that they agree)."""
    here = path or "the top level"
    if is_number(wanted):
        if not is_number(got) or not math.isclose(got, wanted, rel_tol=rel_tol, abs_tol=ABS_TOLERANCE):
            return f"{here}: {show(got)} vs {show(wanted)} expected"
        return ""
    if isinstance(wanted, list):
        if not isinstance(got, list):
            return f"{here}: {show(got)} vs a list expected"
        if len(got) != len(wanted):
            return f"{here}: {len(got)} values vs {len(wanted)} expected"
        for i, (g, w) in enumerate(zip(got, wanted)):
            found = first_difference(g, w, f"{path}[{i}]", rel_tol)
            if found:
                return found
        return ""
    if isinstance(wanted, dict):
        if not isinstance(got, dict):
            return f"{here}: {show(got)} vs an object expected"
        for key, w in wanted.items():
            if key not in got:
                return f"{here}: no {key!r}"
            found = first_difference(got[key], w, f"{path}.{key}" if path else key, rel_tol)
            if found:
                return found
        return ""
    return "" if got == wanted else f"{here}: {show(got)} vs {show(wanted)} expected"


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_dict(text):
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def show(value):
    return short(json.dumps(value), 40)


def short(text, limit=200):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":  # run, or exec()'d by `python -c`; importing it runs nothing
    sys.exit(main(sys.argv))
