"""The reference stack for bench/serve_load.py: Flask under gunicorn, the usual SageMaker
bring-your-own-container recipe, around the very same `Predictor`.

    ITSACAT_SERVE_MODEL_DIR=model gunicorn -k gthread -w 2 --threads 4 bench.reference_app:app

It is what a typical BYOC serve script does (a Flask view that reads the body, calls the
model, returns JSON), not a straw man: same decode path, same model, keep-alive workers.
"""

from __future__ import annotations

import json
import os

from flask import Flask, Response, request

from itsacat.errors import ItsacatError
from itsacat.predict import Predictor

app = Flask(__name__)
_predictor: Predictor | None = None


def predictor() -> Predictor:
    global _predictor
    if _predictor is None:
        _predictor = Predictor.load(os.environ["ITSACAT_SERVE_MODEL_DIR"])
    return _predictor


@app.get("/ping")
def ping() -> Response:
    return Response(json.dumps({"status": "ok"}), 200, mimetype="application/json")


@app.post("/invocations")
def invocations() -> Response:
    try:
        result = predictor().predict_bytes(request.get_data())
    except ItsacatError as exc:
        return Response(json.dumps({"error": str(exc)}), 400, mimetype="application/json")
    return Response(json.dumps(result.to_json()), 200, mimetype="application/json")
