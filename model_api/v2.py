"""Open Inference Protocol V2 (KServe / Triton / Azure ML): wire JSON <-> named numpy tensors. Pure."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from model_api import errors

DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(t) for name, t in {
        "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
        "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
        "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    }.items()
}
NAMES = {dtype: name for name, dtype in DATATYPES.items()}


def parse_infer_request(body: bytes) -> tuple[str | None, dict[str, np.ndarray]]:
    """The request's id and its input tensors, each reshaped to its declared shape and type."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise errors.BadRequest(f"body is not valid JSON: {e}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise errors.InvalidInput('the body must be a JSON object with a non-empty "inputs" list')
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise errors.InvalidInput('"id" must be a string')
    return request_id, dict(_tensor(t) for t in request["inputs"])


def _tensor(t: Any) -> tuple[str, np.ndarray]:
    if not isinstance(t, dict):
        raise errors.InvalidInput("each input must be an object with name, shape, datatype and data")
    name, shape, datatype, data = t.get("name"), t.get("shape"), t.get("datatype"), t.get("data")
    if not isinstance(name, str) or not name:
        raise errors.InvalidInput('each input needs a "name"')
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise errors.InvalidInput(f"input {name!r}: \"shape\" must be a list of non-negative integers")
    if datatype not in DATATYPES:
        raise errors.InvalidInput(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    try:
        array = np.asarray(data)
    except ValueError:
        raise errors.InvalidInput(f"input {name!r}: \"data\" must be a flat or nested list of equal rows") from None
    dtype = DATATYPES[datatype]
    if array.dtype.kind not in ("b" if dtype.kind == "b" else "iuf") or (array.dtype.kind == "f" and dtype.kind != "f"):
        raise errors.InvalidInput(f"input {name!r}: \"data\" does not hold {datatype} values")
    if array.size != int(np.prod(shape)):
        raise errors.InvalidInput(f"input {name!r}: {array.size} values do not fill shape {shape}")
    if dtype.kind in "iu" and array.size and array.dtype != dtype:  # astype would wrap around silently
        limits = np.iinfo(dtype)
        if int(array.min()) < limits.min or int(array.max()) > limits.max:
            raise errors.InvalidInput(f"input {name!r}: values out of the range of {datatype}")
    return name, array.astype(dtype, copy=False).reshape(shape)


def infer_response(model_name: str, model_version: str | None, request_id: str | None,
                   outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = [_output(name, np.asarray(y)) for name, y in outputs.items()]
    return response


def _output(name: str, y: np.ndarray) -> dict[str, Any]:
    datatype = NAMES.get(y.dtype)
    if datatype is None:
        raise errors.ScoringFailed(f"output {name!r} has type {y.dtype}, which V2 cannot carry")
    return {"name": name, "datatype": datatype, "shape": list(y.shape), "data": y.reshape(-1)}
