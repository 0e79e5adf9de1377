"""The quality gate's inputs: what an application declares (`[evaluate]` in shipbot.toml), as the image carries
it, and its evaluation set, read as rows of features and the expected values.

    [evaluate]
    data = "eval/diabetes-test.csv"  # a CSV in the repository at the release's commit, with a header row; or
                                     # "model:<path>", a file that travels with the model version: an artifact
                                     # of the registry version's run, or the blob <name>/<version>/<file>
    label = "target"                 # the column of expected values; every other column is a feature, in order
    metric = "rmse"                  # rmse, mae, r2, accuracy, f1, roc_auc, log_loss (shared/quality.py)
    direction = "lower"              # optional: the metric's own (lower for rmse, mae, log_loss; else higher)
    tolerance = 0.5                  # how much worse than production may still pass, in the metric's units
    batch = 500                      # rows per request to the candidate's endpoint
    seconds = 120                    # the whole evaluation's budget

The builder checks the file when it builds (a bad one fails the build, naming it) and writes the spec with the
file's sha256 onto the image as the label `dev.shipbot.evaluate`, so the gate evaluates exactly the set the
commit named, whichever builder built it. The candidate answers the features through its own scoring route
(model_api's `{"data": rows}` -> `{"result": [...]}`), batch by batch; the metric of its answers is compared
with the figure the release in the chain's last environment (production) scored on the same set.

Pure. No I/O.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
from collections.abc import Mapping
from typing import Any

from shared import quality

LABEL = "dev.shipbot.evaluate"
WITH_MODEL = "model:"  # a data path that names a file of the model version, not of the repository
MAX_BYTES = 64 << 20     # an evaluation set larger than this is refused: it is sent through HTTP, batch by batch
MAX_ROWS = 1_000_000


class DataError(ValueError):
    """The evaluation set cannot be used: the message names the row or the column."""


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    data: str
    label: str
    metric: str
    direction: str
    tolerance: float = 0.0
    batch: int = 500
    seconds: float = 120.0
    sha256: str = ""       # of the data file, as the builder read it ("" for a file of the model version)

    @classmethod
    def declared(cls, declaration: Any, *, sha256: str = "") -> Spec:
        """The spec of an `[evaluate]` declaration (shared.manifest.Evaluate, from shipbot.toml or the fleet)."""
        return cls(data=declaration.data, label=declaration.label, metric=declaration.metric,
                   direction=declaration.direction or quality.METRICS[declaration.metric][1],
                   tolerance=declaration.tolerance, batch=declaration.batch, seconds=declaration.seconds,
                   sha256=sha256)

    @property
    def with_model(self) -> str | None:
        """The path within the model version when the set travels with it; None for a file of the repository."""
        return self.data.removeprefix(WITH_MODEL) if self.data.startswith(WITH_MODEL) else None

    def to_label(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def of_labels(cls, labels: Mapping[str, str] | None) -> Spec | None:
        """The spec an image carries; None when it declares no evaluation. ValueError when it is unusable."""
        raw = (labels or {}).get(LABEL)
        if not raw:
            return None
        try:
            doc = json.loads(raw)
            spec = cls(**{f.name: doc[f.name] for f in dataclasses.fields(cls) if f.name in doc})
        except (ValueError, TypeError) as e:
            raise ValueError(f"the image's {LABEL} label is unusable: {e}") from None
        if spec.metric not in quality.METRICS or spec.direction not in (quality.HIGHER, quality.LOWER):
            raise ValueError(f"the image's {LABEL} label names metric {spec.metric!r}, direction {spec.direction!r}")
        numbers = {"tolerance": spec.tolerance, "seconds": spec.seconds}
        if not (isinstance(spec.batch, int) and not isinstance(spec.batch, bool) and 1 <= spec.batch <= 10_000) or \
                not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                        for v in numbers.values()) or spec.seconds <= 0 or \
                not all(isinstance(v, str) and v for v in (spec.data, spec.label)):
            raise ValueError(f"the image's {LABEL} label is unusable: batch 1-10000, tolerance >= 0, seconds > 0, "
                             "data and label named")
        return spec


@dataclasses.dataclass(frozen=True, slots=True)
class DataSet:
    columns: tuple[str, ...]           # the features, in the order the model takes them
    rows: list[list[float]]
    expected: list[float]
    sha256: str

    def batches(self, size: int) -> list[tuple[int, list[list[float]]]]:
        return [(start, self.rows[start:start + size]) for start in range(0, len(self.rows), size)]


def read(data: bytes, label: str) -> DataSet:
    """The rows of a CSV with a header: every column but `label` is a feature, every value a finite number."""
    if len(data) > MAX_BYTES:
        raise DataError(f"the evaluation set takes {len(data):,} bytes, more than {MAX_BYTES:,}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError("the evaluation set is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise DataError("the evaluation set is empty: a CSV with a header row is expected")
    header = [name.strip() for name in header]
    if label not in header:
        raise DataError(f"the evaluation set has no column {label!r} (it has {', '.join(header[:12])})")
    at = header.index(label)
    rows, expected = [], []
    for number, fields in enumerate(reader, start=2):
        if not fields:
            continue
        if len(fields) != len(header):
            raise DataError(f"row {number} has {len(fields)} values; the header names {len(header)}")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DataError(f"row {number} holds something that is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"row {number} holds a value that is not finite")
        expected.append(values.pop(at))
        rows.append(values)
        if len(rows) > MAX_ROWS:
            raise DataError(f"the evaluation set has more than {MAX_ROWS:,} rows")
    if not rows:
        raise DataError("the evaluation set has a header and no rows")
    return DataSet(tuple(h for i, h in enumerate(header) if i != at), rows, expected,
                   hashlib.sha256(data).hexdigest())


def predictions(answer: Any, rows: int) -> list[Any]:
    """The predictions in a model_api answer to `rows` rows; DataError saying what is wrong."""
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, list):
        raise DataError("the answer has no 'result' list")
    if len(result) != rows:
        raise DataError(f"the answer holds {len(result)} predictions for {rows} rows")
    return result
