"""The sample app: a Flask service around one scikit-learn model, with the routes ShipBot's smoke test and
rollout checks use (shipbot.toml [smoke]): /healthcheck, /score, and /about naming the release it runs."""

import os
from pathlib import Path

import joblib
import numpy
from flask import Flask, jsonify, request

app = Flask(__name__)
model = joblib.load(next(Path(__file__).with_name("model").glob("*.joblib")))


@app.get("/healthcheck")
def healthcheck():
    return jsonify(status="ok")


@app.post("/score")
def score():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "data" not in body:
        return jsonify(error='send {"data": [[...], ...]}'), 400
    return jsonify(result=model.predict(numpy.asarray(body["data"], dtype=float)).tolist())


@app.get("/about")
def about():
    return jsonify(release_id=os.environ.get("RELEASE_ID", ""), commit=os.environ.get("GIT_COMMIT", ""))
