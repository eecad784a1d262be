"""A --preload application whose template misbehaves, for the master's
hardening tests (integration/test_master_safety.py). At import — that is,
in the template — it replaces the template's fork loop:

    FORGE_MODE=forge   answer each fork command with a pid from FORGE_PIDS
                       (comma-separated; MASTER means the template's parent,
                       the master) instead of forking; FORGE_STATE is a file
                       counting answers across templates, so each new
                       template answers the next pid of the list (the last
                       one repeats)
    FORGE_MODE=silent  read fork commands and never answer

A forked worker (none is, in these modes) would serve "forged".
"""
import os
import socket
import sys
import time

MODE = os.environ.get("FORGE_MODE", "forge")


def _next_token():
    tokens = os.environ.get("FORGE_PIDS", "").split(",")
    state = os.environ.get("FORGE_STATE")
    n = 0
    if state:
        try:
            with open(state) as f:
                n = int(f.read().strip() or "0")
        except FileNotFoundError:
            pass
        with open(state, "w") as f:
            f.write(str(n + 1))
    return tokens[min(n, len(tokens) - 1)]


def _fork_workers(control_fd, start_worker):
    control = socket.socket(fileno=control_fd)
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(control, 64, 1)
        except InterruptedError:
            continue
        if not message:
            return 0
        for fd in fds:
            os.close(fd)
        if MODE == "silent":
            continue
        token = _next_token()
        pid = os.getppid() if token == "MASTER" else int(token)
        control.sendall(b"%d\n" % pid)


support = sys.modules.get("_wsgi_fpm_support")
if support is None:
    raise RuntimeError("the worker's support module is not in sys.modules")
support.fork_workers = _fork_workers


def application(environ, start_response):
    body = b"forged"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
