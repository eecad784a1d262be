"""Read the request body in pieces and answer with its length and sha256.

``?mode=`` picks how ``wsgi.input`` is read: ``chunks`` (read(n), the
default), ``all`` (read()), ``lines`` (readline(n)), ``iter`` (iteration).
Without CONTENT_LENGTH (a chunked upload over FastCGI) the body is read until
read() returns b"" — allowed because wsgi-fpm sets wsgi.input_terminated.
"""
import hashlib
import json

from _common import query


def _pieces(inp, mode):
    if mode == "all":
        yield inp.read()
    elif mode == "lines":
        while True:
            line = inp.readline(65536)
            if not line:
                return
            yield line
    elif mode == "iter":
        yield from inp
    else:
        while True:
            chunk = inp.read(65536)
            if not chunk:
                return
            yield chunk


def application(environ, start_response):
    h = hashlib.sha256()
    n = 0
    for piece in _pieces(environ["wsgi.input"], query(environ).get("mode", "chunks")):
        h.update(piece)
        n += len(piece)
    body = json.dumps({
        "length": n,
        "sha256": h.hexdigest(),
        "CONTENT_LENGTH": environ.get("CONTENT_LENGTH"),
        "wsgi.input_terminated": environ.get("wsgi.input_terminated"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
