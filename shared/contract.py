"""The smoke contract of a release image: how the smoke test and every rollout's verification check it.

An app declares it in shipbot.toml's [smoke]; the builder writes it onto the image as the label
`dev.shipbot.contract` (JSON, the sample request and the expected answer inline), so that any checker, the
local one, an ACR Task step or the Kubernetes deployer, needs nothing but the image's config. An image
without the label (the model-only shape, or a foreign image) gets model_api's contract: port 5001, /readyz,
/version, the sample files in its model folder.

`first_difference` and `identity_mismatch` are the comparisons every checker applies. Pure. No I/O.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from shared import ports

LABEL = "dev.shipbot.contract"
MODEL_API_PORT = 5001
MAX_LABEL_BYTES = 64 << 10  # an ACR Task's build step carries the label on its command line (128 KB at most)
REL_TOLERANCE = 1e-6
ABS_TOLERANCE = 1e-12  # so that an expected 0.0 does not demand an exact 0.0


@dataclasses.dataclass(frozen=True)
class Contract:
    """shipbot.toml [smoke], as the image's label carries it; the defaults are model_api's."""

    port: int = MODEL_API_PORT
    ready_path: str = "/readyz"
    identity_path: str | None = "/version"  # None: the image is identified by the digest that runs
    score_path: str = "/score"
    request: Any = None                     # the sample request (JSON); None: the model folder's file
    expect_status: int = 200
    expect_json: Any = None                 # what must come back; None: the model folder's file, if any
    tolerance: float = REL_TOLERANCE
    expect_keys: tuple[str, ...] = ()
    ready_seconds: float | None = None      # how long it may take to get ready; None: the checker's budget
    request_seconds: float | None = None    # how long the sample request may take; None: what is left
    own: bool = False                       # from the image's label (else model_api's defaults)

    @classmethod
    def of_labels(cls, labels: Mapping[str, str] | None) -> Contract:
        """The contract an image's labels carry; model_api's when it has none. ValueError when unusable."""
        raw = (labels or {}).get(LABEL)
        if not raw:
            return cls()
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            fields = {f.name for f in dataclasses.fields(cls)} - {"own"}
            known = {k: (tuple(v) if k == "expect_keys" else v) for k, v in doc.items() if k in fields}
            return cls(**known, own=True)
        except (ValueError, TypeError) as e:
            raise ValueError(f"the image's {LABEL} label is unusable: {e}") from None

    def label(self) -> str:
        """The label's value: compact JSON of every field but `own`."""
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "own"}
        doc["expect_keys"] = list(self.expect_keys)
        return json.dumps(doc, separators=(",", ":"))


def identity_mismatch(version: Mapping[str, Any], expected: ports.Expectation, *, path: str = "/version",
                      loose: bool = False) -> str:
    """Why an identity document does not name `expected` ("" when it does). model_api's /version must match
    field by field; an app's own route (`loose`) must name the release id or the commit under any key."""
    if loose:
        wanted = {expected.release_id, expected.commit} - {None}
        if wanted and not wanted & {v for v in version.values() if isinstance(v, str)}:
            return f"{path} names neither the release {expected.release_id} nor the commit {expected.commit}"
        return ""
    checks = [("release", "release_id", expected.release_id), ("model sha256", "model_sha256", expected.model_sha256),
              ("commit", "git_commit", expected.commit)]
    for what, field, wanted in checks:
        if wanted is not None and version.get(field) != wanted:
            return f"{path} reports {what} {version.get(field)}, expected {wanted}"
    return ""


def first_difference(got: Any, wanted: Any, path: str = "", *, rel_tol: float = REL_TOLERANCE) -> str:
    """Where `got` first differs from `wanted` ("" if nowhere), numbers compared within `rel_tol`:
    e.g. "result[3]: 1.0 vs 2.0 expected"."""
    here = path or "the top level"
    if _is_number(wanted):
        if not _is_number(got) or not math.isclose(got, wanted, rel_tol=rel_tol, abs_tol=ABS_TOLERANCE):
            return f"{here}: {_show(got)} vs {_show(wanted)} expected"
        return ""
    if isinstance(wanted, list):
        if not isinstance(got, list):
            return f"{here}: {_show(got)} vs a list expected"
        if len(got) != len(wanted):
            return f"{here}: {len(got)} values vs {len(wanted)} expected"
        for i, (g, w) in enumerate(zip(got, wanted)):
            if found := first_difference(g, w, f"{path}[{i}]", rel_tol=rel_tol):
                return found
        return ""
    if isinstance(wanted, dict):
        if not isinstance(got, dict):
            return f"{here}: {_show(got)} vs an object expected"
        for key, w in wanted.items():
            if key not in got:
                return f"{here}: no {key!r}"
            if found := first_difference(got[key], w, f"{path}.{key}" if path else key, rel_tol=rel_tol):
                return found
        return ""
    return "" if got == wanted else f"{here}: {_show(got)} vs {_show(wanted)} expected"


def per_row(scored: Any, sample: Any) -> str:
    """Why model_api's answer to `sample` is not one number per row ("" when it is): the check of a model that
    came with no sample response (an MLflow model, smoke-tested with its input example)."""
    rows = sample.get("data") if isinstance(sample, dict) else None
    result = scored.get("result") if isinstance(scored, dict) else None
    if not isinstance(result, list):
        return f"the answer has no 'result' list: {_show(scored)}"
    if isinstance(rows, list) and len(result) != len(rows):
        return f"'result' holds {len(result)} predictions for {len(rows)} rows"
    if any(not (_is_number(v) or isinstance(v, (str, list))) for v in result) or \
            any(_is_number(v) and not math.isfinite(v) for v in result):
        return f"'result' holds something that is not a prediction: {_show(result)}"
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def of_image(registry: ports.Registry, ref: str) -> Contract:
    """The contract of `ref` (`host/repository@sha256:...`) as its labels in `registry` say; model_api's for an
    image of another registry. The registry's NotFound and TransientError pass through; ValueError when the
    label is unusable."""
    host, _, rest = ref.partition("/")
    repository, at, digest = rest.partition("@")
    if host != registry.host or not at:
        return Contract()
    return Contract.of_labels(registry.get_image(repository, digest).labels)
