"""Dump the WSGI environ as JSON.

Every str value is kept as it is (PEP 3333 "native strings": the test
compares latin-1 decoded bytes), other values become their repr, and
``__types__`` gives the Python type name of every value so that the tests can
check that CGI variables are ``str``. Headers given in ``?set_header=`` are
echoed back, which lets a test tell what method the application saw on HEAD.
"""
import json


def _jsonable(value):
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return repr(value)


def environ_as_json(environ):
    data = {k: _jsonable(v) for k, v in environ.items()}
    data["__types__"] = {k: type(v).__name__ for k, v in environ.items()}
    # Reading wsgi.input must work and never block past the end of the body.
    # read(n) in a loop, not read(): wsgiref.validate allows only read(n).
    body = b""
    while True:
        chunk = environ["wsgi.input"].read(65536)
        if not chunk:
            break
        body += chunk
    data["__body__"] = body.decode("latin-1")
    return json.dumps(data, sort_keys=True).encode("ascii")


def application(environ, start_response):
    body = environ_as_json(environ)
    start_response("200 OK", [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("X-Seen-Method", environ["REQUEST_METHOD"]),
    ])
    return [body]
