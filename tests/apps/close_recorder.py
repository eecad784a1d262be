"""Stream for a long time and record in a file that close() was called.

``?marker=PATH`` is the file written by close(): "closed after N chunks".
The stream lasts ``?seconds=`` (default 20) so that a server that does not
notice the client going away still calls close() in the end, but late.
"""
import time

from _common import query


class Body:
    def __init__(self, marker, seconds):
        self.marker = marker
        self.deadline = time.time() + seconds
        self.sent = 0

    def __iter__(self):
        return self

    def __next__(self):
        if time.time() > self.deadline:
            raise StopIteration
        if self.sent:
            time.sleep(0.05)
        self.sent += 1
        return b"x" * 8192

    def close(self):
        with open(self.marker, "w") as f:
            f.write("closed after %d chunks\n" % self.sent)


def application(environ, start_response):
    q = query(environ)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("X-Accel-Buffering", "no")])
    return Body(q["marker"], float(q.get("seconds", "20")))
