"""An app for the master's lifecycle tests: who answers, and ways to die.
    /pid    this worker's pid
    /exit   os._exit(3) mid-request
    /segv   SIGSEGV mid-request
    /sleep  ?s=SECONDS, then answer
    /ids    uid, gid, groups, umask, cwd, HOME, LANG, LC_ALL and the environment
    else    VERSION (tests rewrite this file to see reloads)
"""
import json
import os
import sys
import signal
import time
from urllib.parse import parse_qs

VERSION = "one"


def _answer(start_response, body, status="200 OK"):
    body = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/pid":
        return _answer(start_response, str(os.getpid()))
    if path == "/exit":
        os._exit(3)
    if path == "/segv":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
    if path == "/sleep":
        seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["1"])[0])
        time.sleep(seconds)
        return _answer(start_response, "slept")
    if path == "/ids":
        mask = os.umask(0)
        os.umask(mask)
        return _answer(start_response, json.dumps({
            "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
            "umask": mask, "cwd": os.getcwd(), "env": dict(os.environ),
            "prefix": sys.prefix, "executable": sys.executable, "path": sys.path,
        }))
    return _answer(start_response, VERSION)
