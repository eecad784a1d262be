"""Sleep ``?s=`` seconds (default 0.05), or with ``?spin=`` compute for
that many seconds holding the GIL, then dump a small JSON record: the
thread, and when the work began and ended (``time.monotonic``).

Used by the concurrency tests: every answer names its own ``?n=`` so that a
mixed-up response is caught.
"""
import json
import os
import threading
import time

from _common import query


def application(environ, start_response):
    q = query(environ)
    began = time.monotonic()
    spin = float(q.get("spin", "0"))
    if spin:
        while time.monotonic() - began < spin:
            pass
    else:
        time.sleep(float(q.get("s", "0.05")))
    body = json.dumps({"n": q.get("n"), "pid": os.getpid(),
                       "thread": threading.get_ident(),
                       "began": began, "ended": time.monotonic(),
                       "request_id": str(environ.get("wsgi_fpm.request_id"))}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
