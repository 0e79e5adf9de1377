"""The smoke check that AcrTaskSmokeRunner's ACR Task runs INSIDE the release image (second step), against the
image's own container started detached by the first step. Standard library only: it runs on the image's python.

Invoked as `python -c "import base64,sys;exec(base64.b64decode(sys.argv[1]))" <this file, base64> <config>`,
where config is base64 JSON: {"url", "budget", "release_id", "model_sha256", "commit", "model_dir"}. It waits
for /readyz, checks /version against the expectation, POSTs the image's sample-request.json to /score and
compares the answer with sample-response.json as DockerSmokeRunner does (shared.adapters.local.smoke), then
prints one line `SHIPBOT-SMOKE {"passed": ..., "reason": ..., "steps": [[name, seconds], ...]}` and exits 0
when it passed, 1 when it did not.
"""

import base64
import json
import math
import sys
import time
import urllib.error
import urllib.request

MARKER = "SHIPBOT-SMOKE"
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
    model_dir = config.get("model_dir") or "/var/azureml-app/model"
    try:
        with open(f"{model_dir}/sample-request.json", "rb") as f:
            sample = json.load(f)
        with open(f"{model_dir}/sample-response.json", "rb") as f:
            wanted = json.load(f)
    except OSError as e:
        return f"the image has no {e.filename}: nothing to smoke-test with"
    except ValueError as e:
        return f"the image's sample files are unusable: {short(str(e))}"

    reason = await_ready(url, deadline, budget)
    step("ready")
    if reason:
        return reason
    reason = check_version(url, config, timeout=min(10.0, deadline - time.monotonic()))
    step("version")
    if reason:
        return reason
    reason = score(url, sample, wanted, timeout=deadline - time.monotonic(), budget=budget)
    step("score")
    return reason


def await_ready(url, deadline, budget):
    last = "no answer"
    while True:
        status, body = get(f"{url}/readyz", timeout=2)
        if status == 200:
            return ""
        if status is not None:
            last = f"{status} {short(body)}"
            state = as_dict(body).get("status")
            if state == "failed":
                return f"/readyz reports the model failed to load: {short(str(as_dict(body).get('error')))}"
        if time.monotonic() >= deadline:
            return f"/readyz did not answer 200 within {budget:g} s (last answer: {last})"
        time.sleep(POLL_SECONDS)


def check_version(url, config, timeout):
    status, body = get(f"{url}/version", timeout=max(timeout, 0.1))
    if status is None:
        return f"/version did not answer: {body}"
    if status != 200:
        return f"/version answered {status}: {short(body)}"
    version = as_dict(body)
    for what, field, key in (("release", "release_id", "release_id"), ("model sha256", "model_sha256", "model_sha256"),
                             ("commit", "git_commit", "commit")):
        wanted = config.get(key)
        if wanted is not None and version.get(field) != wanted:
            return f"/version reports {what} {version.get(field)}, expected {wanted}"
    return ""


def score(url, sample, wanted, timeout, budget):
    if timeout <= 0:
        return f"no time left for POST /score within {budget:g} s"
    request = urllib.request.Request(f"{url}/score", data=json.dumps(sample).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    status, body = send(request, timeout)
    if status is None:
        return f"POST /score did not answer: {body}"
    if status != 200:
        return f"POST /score answered {status}: {short(body)}"
    try:
        scored = json.loads(body)
    except ValueError:
        return f"POST /score answered something that is not JSON: {short(body)}"
    difference = first_difference(scored, wanted)
    return f"score differs from sample-response.json at {difference}" if difference else ""


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


def first_difference(got, wanted, path=""):
    """As shared.adapters.local.smoke.first_difference (tests/unit checks that they agree)."""
    here = path or "the top level"
    if is_number(wanted):
        if not is_number(got) or not math.isclose(got, wanted, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE):
            return f"{here}: {show(got)} vs {show(wanted)} expected"
        return ""
    if isinstance(wanted, list):
        if not isinstance(got, list):
            return f"{here}: {show(got)} vs a list expected"
        if len(got) != len(wanted):
            return f"{here}: {len(got)} values vs {len(wanted)} expected"
        for i, (g, w) in enumerate(zip(got, wanted)):
            found = first_difference(g, w, f"{path}[{i}]")
            if found:
                return found
        return ""
    if isinstance(wanted, dict):
        if not isinstance(got, dict):
            return f"{here}: {show(got)} vs an object expected"
        for key, w in wanted.items():
            if key not in got:
                return f"{here}: no {key!r}"
            found = first_difference(got[key], w, f"{path}.{key}" if path else key)
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
