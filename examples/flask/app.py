"""A small Flask application served by wsgi-fpm.

    pip install flask
    wsgi-fpm --http 127.0.0.1:8000 examples/flask/app.py
    curl http://127.0.0.1:8000/hello/world

Behind a front end mounted under a prefix, tell wsgi-fpm the prefix and
Flask's url_for() builds links that include it:

    wsgi-fpm --fastcgi 127.0.0.1:9000 --mount /shop examples/flask/app.py

wsgi-fpm looks for a callable named ``application`` in the file
(``--callable app`` would work too).
"""
from flask import Flask, jsonify, request, url_for

app = Flask(__name__)


@app.route("/")
def index():
    return {"hello": url_for("hello", name="world")}


@app.route("/hello/<name>")
def hello(name):
    return f"Hello, {name}!\n"


@app.route("/echo", methods=["POST"])
def echo():
    return jsonify(received=request.get_json(), bytes=request.content_length)


application = app
