"""A slow generator: one chunk at once, then ``?chunks=`` more every ``?delay=`` s.

``X-Accel-Buffering: no`` asks nginx not to buffer (it honours it for
fastcgi/scgi/uwsgi); the other front ends are configured to stream.
"""
import time

from _common import query


def application(environ, start_response):
    q = query(environ)
    delay = float(q.get("delay", "1.5"))
    chunks = int(q.get("chunks", "1"))
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("X-Accel-Buffering", "no")])

    def body():
        yield b"first %.6f\n" % time.time()
        for i in range(chunks):
            time.sleep(delay)
            yield b"later %d %.6f\n" % (i, time.time())
    return body()
