"""The application behind the auth responder in integration/test_auth.py.

Answers with what an auth check hands on to an application: REMOTE_USER,
AUTH_TYPE, and the variables an auth script can return (PROCESS_GROUP,
AUTH_SOURCE) or nginx passes from the auth answer (AUTH_GROUPS), as JSON.
Every call is also recorded, one line per request, in
$WSGI_FPM_TEST_TMP/auth_echo-runs.log with the request's X-Tag header, so
that a test can tell that a request never reached the application.
"""
import json
import os

KEYS = ("REMOTE_USER", "AUTH_TYPE", "PROCESS_GROUP", "AUTH_SOURCE", "AUTH_GROUPS",
        "REQUEST_URI", "PATH_INFO", "REQUEST_METHOD", "HTTP_AUTHORIZATION", "REMOTE_PASSWD")


def runs_log():
    return os.path.join(os.environ.get("WSGI_FPM_TEST_TMP", "/tmp"), "auth_echo-runs.log")


def application(environ, start_response):
    tag = environ.get("HTTP_X_TAG")
    if tag:
        with open(runs_log(), "a") as f:
            f.write(tag + "\n")
    body = json.dumps({k: environ[k] for k in KEYS if k in environ}, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
