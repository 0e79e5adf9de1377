"""The scoring script of an Azure ML-style repository (as MLOpsPython lays one out): Azure ML, or ShipBot's
model_api around it, calls init() once and run() per request. No web framework, no Dockerfile: the serving
image is ShipBot's, with this repository's environment file installed on top.

Request:  {"data": [[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6], ...]}
Answer:   {"result": [prediction, ...]}
"""

import json
import os

import joblib
import numpy

model = None


def init():
    """Loads the registered model from the folder Azure ML (or model_api) names in AZUREML_MODEL_DIR."""
    global model
    folder = os.environ["AZUREML_MODEL_DIR"]
    names = [name for name in os.listdir(folder) if name.endswith((".joblib", ".pkl"))]
    if len(names) != 1:
        raise RuntimeError(f"expected one model file in {folder}, found {names}")
    model = joblib.load(os.path.join(folder, names[0]))


def run(raw_data, request_headers=None):
    """Scores the rows of one request; a request it cannot read gets an error the caller can act on."""
    try:
        rows = numpy.asarray(json.loads(raw_data)["data"], dtype=float)
    except (ValueError, KeyError, TypeError) as e:
        return {"error": f"expected {{\"data\": [[...10 numbers...], ...]}}: {e}"}
    if rows.ndim != 2:
        return {"error": "data must be a list of rows"}
    return {"result": model.predict(rows).tolist()}
