"""An app for the master's lifecycle tests (integration/test_master_lifecycle.py).

    /pid      this worker's pid
    /errors   ?m=TEXT: writes TEXT to wsgi.errors, answers the pid
    /alloc    ?mb=N: keeps N MiB (written, so resident) in a global, answers the pid
    /spike    ?mb=N&s=S: holds N MiB for S seconds, then gives them back; answers the pid
    /flood    ?mb=N: a thread writes N MiB without a newline to the worker's status
              pipe (found in /proc/self/fd: the write-only pipe); answers the pid
    /flooded  whether that thread is done ("yes"/"no")
    /sleep    ?s=SECONDS, then answers "slept"
    /helper   the VALUE of the module named by PROBE_HELPER, and the pid
    /imported what the import script left: {"pid", "script_pid"}
    /signal   calls signal.signal() from a request thread
    /handlers whether the SIGTERM/SIGINT/SIGHUP handlers are the app's own
    else      VERSION

What happens at import is chosen by the environment:
    PROBE_SLOW_FLAG=FILE   if FILE exists, remove it and sleep as many seconds as
                           it says (a one-shot slow start: the next import is quick)
    PROBE_HELPER=NAME      import the module NAME (from --python-path)
    PROBE_GRAB_SIGNALS=FILE  install handlers for SIGTERM, SIGINT and SIGHUP that
                           write to FILE (they must be refused)
"""
import importlib
import json
import os
import signal
import sys
import threading
import time
from urllib.parse import parse_qs

VERSION = "one"
BALLAST = []

_flag = os.environ.get("PROBE_SLOW_FLAG")
if _flag:
    try:
        with open(_flag) as f:
            _seconds = float(f.read().strip() or "0")
        os.unlink(_flag)
    except FileNotFoundError:
        _seconds = 0.0
    time.sleep(_seconds)

HELPER = importlib.import_module(os.environ["PROBE_HELPER"]) if os.environ.get("PROBE_HELPER") else None

_grab = os.environ.get("PROBE_GRAB_SIGNALS")


def _grabbed(signum, frame):
    with open(_grab, "a") as f:
        f.write("handler ran for %d in %d\n" % (signum, os.getpid()))


if _grab:
    for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(_sig, _grabbed)


_FLOOD = {}


def _status_pipes():
    """Write-only pipes of this process other than stdio: the status pipe."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd < 3:
            continue
        try:
            if not os.readlink("/proc/self/fd/%d" % fd).startswith("pipe:"):
                continue
            with open("/proc/self/fdinfo/%d" % fd) as f:
                flags = int(f.read().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError, ValueError):
            continue
        if flags & 3 == os.O_WRONLY:
            found.append(fd)
    return found


def _flood(mb):
    chunk = b"x" * (1 << 20)
    try:
        for fd in _status_pipes():
            for _ in range(mb):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
    finally:
        _FLOOD["done"] = True


def _answer(start_response, body, status="200 OK"):
    body = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/pid":
        return _answer(start_response, str(os.getpid()))
    if path == "/errors":
        environ["wsgi.errors"].write(query.get("m", ["marker"])[0] + "\n")
        environ["wsgi.errors"].flush()
        return _answer(start_response, str(os.getpid()))
    if path == "/alloc":
        mb = int(query.get("mb", ["100"])[0])
        BALLAST.append(b"\x01" * (mb << 20))
        return _answer(start_response, str(os.getpid()))
    if path == "/spike":
        held = bytearray(b"\x01" * (int(query.get("mb", ["100"])[0]) << 20))
        time.sleep(float(query.get("s", ["0.5"])[0]))
        del held
        return _answer(start_response, str(os.getpid()))
    if path == "/flood":
        mb = int(query.get("mb", ["100"])[0])
        _FLOOD["done"] = False
        threading.Thread(target=_flood, args=(mb,), daemon=True).start()
        return _answer(start_response, str(os.getpid()))
    if path == "/flooded":
        return _answer(start_response, "yes" if _FLOOD.get("done") else "no")
    if path == "/sleep":
        time.sleep(float(query.get("s", ["1"])[0]))
        return _answer(start_response, "slept")
    if path == "/helper":
        return _answer(start_response, "%s %d" % (HELPER.VALUE, os.getpid()))
    if path == "/imported":
        return _answer(start_response, json.dumps({
            "pid": os.getpid(), "script_pid": getattr(sys, "_probe_import_script_pid", None)}))
    if path == "/signal":
        try:
            signal.signal(signal.SIGUSR2, _grabbed)
        except Exception as e:  # the interpreter's own refusal, off the main thread
            return _answer(start_response, "raised %s: %s" % (type(e).__name__, e))
        return _answer(start_response, "returned")
    if path == "/handlers":
        own = {name: signal.getsignal(getattr(signal, name)) is _grabbed
               for name in ("SIGTERM", "SIGINT", "SIGHUP")}
        return _answer(start_response, json.dumps(own))
    return _answer(start_response, VERSION)
