"""Workload "post": read the request body (1 MiB in the benchmark) in 64 KiB
pieces and answer with its length and sha256, as JSON."""
import hashlib
import json


def application(environ, start_response):
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    h = hashlib.sha256()
    n = 0
    while remaining > 0:
        piece = stream.read(min(remaining, 65536))
        if not piece:
            break
        h.update(piece)
        n += len(piece)
        remaining -= len(piece)
    body = json.dumps({"length": n, "sha256": h.hexdigest()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
