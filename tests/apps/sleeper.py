"""Sleep ``?s=`` seconds (default 0.05), then dump a small JSON record.

Used by the concurrency test: every answer names its own ``?n=`` so that a
mixed-up response is caught.
"""
import json
import os
import threading
import time

from _common import query


def application(environ, start_response):
    q = query(environ)
    time.sleep(float(q.get("s", "0.05")))
    body = json.dumps({"n": q.get("n"), "pid": os.getpid(),
                       "thread": threading.get_ident(),
                       "request_id": str(environ.get("wsgi_fpm.request_id"))}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
