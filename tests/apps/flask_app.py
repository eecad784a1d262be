"""A Flask application for the end-to-end tests (wsgi-fpm loads it as a file).

/hello     plain text
/link      url_for("hello"): shows that Flask sees the mount in SCRIPT_NAME
/echo      POST JSON → the same JSON plus its length
/user/<n>  a converter, to check PATH_INFO reaches Flask's router decoded
"""
from flask import Flask, jsonify, request, url_for

app = Flask(__name__)


@app.route("/hello")
def hello():
    return "Hello from Flask"


@app.route("/link")
def link():
    return url_for("hello")


@app.route("/echo", methods=["POST"])
def echo():
    data = request.get_json()
    return jsonify(data=data, length=request.content_length)


@app.route("/user/<name>")
def user(name):
    return jsonify(name=name)


application = app
