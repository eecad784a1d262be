"""Workload "flask": a small JSON answer from a Flask route (GET /json)."""
from flask import Flask, jsonify

app = Flask(__name__)

# bench/lib/workloads.py checks the answer against its copy, FLASK_JSON.
GREETING = {"message": "Hello, world!", "items": [1, 2, 3], "ok": True}


@app.route("/json")
def greeting():
    return jsonify(GREETING)


application = app
