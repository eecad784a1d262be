"""An app for the operations tests (integration/test_operations.py): requests
that get stuck in every way a watchdog must tell apart, calls it can count,
memory it can grow, and every way an application writes to a log.

    /pid       this worker's pid
    /sleep     ?s=S: sleeps S seconds in short Python sleeps (an async
               exception ends it at once); ?mark=NAME: writes NAME.start
               (request id, pid) when it starts and NAME.end (the exception's
               class name, or "done") when it ends, in $WSGI_FPM_TEST_TMP
    /csleep    ?s=S: one time.sleep(S) call: an async exception waits for it
    /busy      ?s=S: pure Python arithmetic for S seconds (lets the GIL go)
    /regex     a regular expression that backtracks for minutes, in C,
               holding the GIL
    /gil       ?s=S: a C call (usleep through ctypes.PyDLL) that holds the
               GIL for exactly S seconds
    /work      ?tag=T&s=S: appends T to $WSGI_FPM_TEST_TMP/calls-$CALLS,
               then sleeps S seconds (default 0); answers T
    /grow      ?mb=N: keeps N MiB (written, so resident); answers the pid
    /spike     ?mb=N: allocates N MiB, writes them, frees them; answers the pid
    /cpu       burns CPU in Python until the process is stopped (for
               cpu-time-limit)
    /exhaust   ?what=memory: allocates until MemoryError; ?what=files:
               opens descriptors until OSError; frees them and re-raises
    /log       ?m=MARK: prints MARK to stdout and stderr, writes it to
               wsgi.errors and logs it with the logging module
    else       "ok"
"""
import ctypes
import json
import logging
import os
import re
import sys
import time
from urllib.parse import parse_qs

TMP = os.environ.get("WSGI_FPM_TEST_TMP", "/tmp")
KEPT = []


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _answer(start_response, body, status="200 OK"):
    body = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _write(name, text):
    with open(os.path.join(TMP, name), "a") as f:
        f.write(text)


def sleep_in_python(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


def busy_in_python(seconds):
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        for i in range(1000):
            n += i * i % 7
    return n


def backtrack():
    # (a+)+$ against a run of a's that ends in b: 2^40 ways to fail, in C,
    # without letting the GIL go.
    return re.match(r"(a+)+$", "a" * 40 + "b")


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = _q(environ)
    if path == "/pid":
        return _answer(start_response, str(os.getpid()))
    if path == "/sleep":
        mark = q.get("mark")
        if mark:
            _write(mark + ".start", json.dumps({"request_id": environ.get("wsgi_fpm.request_id"),
                                                "pid": os.getpid()}))
        try:
            sleep_in_python(float(q.get("s", "1")))
        except BaseException as e:
            if mark:
                _write(mark + ".end", "%s.%s" % (type(e).__module__, type(e).__name__))
            raise
        if mark:
            _write(mark + ".end", "done")
        return _answer(start_response, json.dumps({"pid": os.getpid(), "slept": q.get("s", "1"),
                                                   "pad": "x" * 4096}))
    if path == "/csleep":
        time.sleep(float(q.get("s", "30")))
        return _answer(start_response, str(os.getpid()))
    if path == "/busy":
        busy_in_python(float(q.get("s", "1")))
        return _answer(start_response, str(os.getpid()))
    if path == "/regex":
        backtrack()
        return _answer(start_response, "matched?")
    if path == "/gil":
        ctypes.PyDLL(None).usleep(int(float(q.get("s", "1")) * 1e6))
        return _answer(start_response, str(os.getpid()))
    if path == "/work":
        tag = q.get("tag", "-")
        _write("calls-" + os.environ.get("CALLS", "default"), tag + "\n")
        sleep_in_python(float(q.get("s", "0")))
        return _answer(start_response, tag)
    if path == "/grow":
        block = bytearray(int(q.get("mb", "100")) * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        KEPT.append(block)
        return _answer(start_response, str(os.getpid()))
    if path == "/spike":
        block = bytearray(int(q.get("mb", "100")) * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        del block
        return _answer(start_response, str(os.getpid()))
    if path == "/cpu":
        while True:
            busy_in_python(1)
    if path == "/exhaust":
        held = []
        try:
            while True:
                if q.get("what") == "files":
                    held.append(open(os.devnull))
                else:
                    held.append(bytearray(16 * 1024 * 1024))
        finally:
            for f in held:
                if hasattr(f, "close"):
                    f.close()
            del held[:]
    if path == "/log":
        mark = q.get("m", "mark")
        print("stdout-" + mark, flush=True)
        print("stderr-" + mark, file=sys.stderr, flush=True)
        environ["wsgi.errors"].write("errors-" + mark + "\n")
        environ["wsgi.errors"].flush()
        logging.getLogger("opsapp").warning("logging-%s", mark)
        return _answer(start_response, "logged")
    return _answer(start_response, "ok")
