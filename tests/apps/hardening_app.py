"""The application behind integration/test_hardening.py: router.py's
applications, plus routes that misbehave the way a tenant's code can.
Chosen by the last path segment:

    /pid         this worker's pid, as text
    /child       starts `sleep ?s=` (default 20) with subprocess.Popen(close_fds=False),
                 so the child inherits every descriptor that is not close-on-exec;
                 answers the child's pid
    /latewrite   answers "first"; its iterable's close() calls the write callable
                 start_response returned, and a thread keeps calling that leaked
                 write for ?leak= seconds (default 1) after the response
    /latestream  the same, but streams 8 KiB chunks every 50 ms for ?seconds= (default
                 20) first, so that a test can abort it mid-response
    anything else  router.py

Every late write's outcome is appended to $WSGI_FPM_TEST_TMP/latewrite-?tag=.log
("close: ..." / "leak: ..."), so that a test can tell the writes were tried.
Every request with an X-Tag header appends it to
$WSGI_FPM_TEST_TMP/hardening-runs.log, so that a test can tell that a request
never reached the application.
"""
import os
import subprocess
import threading
import time

import router
from _common import full_path, query


def tmp(name):
    return os.path.join(os.environ.get("WSGI_FPM_TEST_TMP", "/tmp"), name)


def record(tag, line):
    with open(tmp("latewrite-%s.log" % tag), "a") as f:
        f.write(line + "\n")


def pid(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def child(environ, start_response):
    seconds = query(environ).get("s", "20")
    proc = subprocess.Popen(["sleep", seconds], close_fds=False,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    body = str(proc.pid).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _try_write(write, tag, who, data):
    try:
        write(data)
        record(tag, "%s: written" % who)
    except Exception as e:  # the expected outcome: the response is over
        record(tag, "%s: %s: %s" % (who, type(e).__name__, e))


def _leak(write, tag, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _try_write(write, tag, "leak", b"LATE-LEAK")
        time.sleep(0.02)
    record(tag, "leak: done")


class LateBody:
    """An iterable whose close() writes, and hands `write` to a thread."""

    def __init__(self, write, tag, leak, chunks, every):
        self.write = write
        self.tag = tag
        self.leak = leak
        self.chunks = chunks
        self.every = every
        self.sent = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.sent >= len(self.chunks):
            raise StopIteration
        if self.sent and self.every:
            time.sleep(self.every)
        chunk = self.chunks[self.sent]
        self.sent += 1
        return chunk

    def close(self):
        _try_write(self.write, self.tag, "close", b"LATE-CLOSE")
        threading.Thread(target=_leak, args=(self.write, self.tag, self.leak), daemon=True).start()


def latewrite(environ, start_response):
    q = query(environ)
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    return LateBody(write, q.get("tag", "none"), float(q.get("leak", "1")), [b"first"], 0)


def latestream(environ, start_response):
    q = query(environ)
    write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
    n = int(float(q.get("seconds", "20")) / 0.05)
    return LateBody(write, q.get("tag", "none"), float(q.get("leak", "1")), [b"s" * 8192] * n, 0.05)


ROUTES = {"pid": pid, "child": child, "latewrite": latewrite, "latestream": latestream}


def application(environ, start_response):
    tag = environ.get("HTTP_X_TAG")
    if tag:
        with open(tmp("hardening-runs.log"), "a") as f:
            f.write(tag + "\n")
    name = full_path(environ).rstrip("/").rsplit("/", 1)[-1]
    return ROUTES.get(name, router.application)(environ, start_response)
