"""Real applications behind every front end: wsgiref.validate, Flask, Django,
the examples, and an application that raises (SPEC §3)."""
import hashlib
import json
import time
import uuid

import pytest

from harness import EXAMPLES


def test_wsgiref_validator_finds_no_violation_by_the_server(fe):
    route = fe.route("validated")
    r = route.get("/v/some/where?x=1")
    assert r.status == 200, "wsgiref.validate rejected the environ or the server's calls: %r" % r
    env = r.json()
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/v", "/some/where")
    data = b"0123456789" * 20000
    r = route.request("POST", "/v/upload", body=data)
    assert r.status == 200, r
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    r = route.get("/v/stream?delay=0.1&chunks=2")
    assert r.status == 200 and b"later 1" in r.body, r
    r = route.get("/v/filewrapper?size=100000")
    assert r.status == 200 and len(r.body) == 100000, r


def test_flask_app_works_under_its_mount(fe):
    route = fe.route("flask")
    r = route.get("/flask/hello")
    assert (r.status, r.body) == (200, b"Hello from Flask"), r
    r = route.get("/flask/link")
    assert r.body == b"/flask/hello", "url_for() did not see the mount in SCRIPT_NAME: %r" % r
    body = json.dumps({"a": [1, 2]}).encode()
    r = route.request("POST", "/flask/echo", body=body, headers=[("Content-Type", "application/json")])
    assert r.status == 200, r
    assert r.json() == {"data": {"a": [1, 2]}, "length": len(body)}
    r = route.get("/flask/user/caf%C3%A9")
    assert r.status == 200 and r.json() == {"name": "café"}, r


def test_django_app_works_under_its_mount(fe):
    route = fe.route("django")
    r = route.get("/django/hello")
    assert (r.status, r.body) == (200, b"Hello from Django"), r
    r = route.get("/django/link")
    assert r.body == b"/django/hello", "reverse() did not see the mount in SCRIPT_NAME: %r" % r
    r = route.request("POST", "/django/echo", body=b'{"b": 2}',
                      headers=[("Content-Type", "application/json")])
    assert r.status == 200, r
    assert r.json() == {"data": {"b": 2}, "length": 8, "path": "/django/echo", "path_info": "/echo"}


def test_exception_gives_500_without_traceback_and_logs_the_traceback(fe):
    route = fe.route("main")
    token = uuid.uuid4().hex
    r = route.get("/raise?token=" + token)
    assert r.status == 500, r
    for leak in (b"Traceback", token.encode(), b"AppFailure", b"raising.py"):
        assert leak not in r.body, "the client got %r in the 500 body" % leak
    deadline = time.monotonic() + 5
    log = ""
    while time.monotonic() < deadline:
        log = route.backend.log_text()
        if token in log:
            break
        time.sleep(0.1)
    assert token in log, "the exception is not in wsgi-fpm's log %s" % route.backend.log
    assert "Traceback" in log
    assert "AppFailure" in log


EXAMPLE_APPS = {
    "hello": (str(EXAMPLES / "hello.py"), (), "/", b"Hello, world!"),
    "flask": (str(EXAMPLES / "flask" / "app.py"), (), "/hello/world", b"Hello, world!\n"),
    "django": ("mysite.wsgi:application", ("--python-path", str(EXAMPLES / "django")),
               "/hello/world/", b"Hello, world!\n"),
}


@pytest.mark.parametrize("example", sorted(EXAMPLE_APPS))
def test_examples_answer_over_every_protocol(spawn, example):
    app, args, path, expected = EXAMPLE_APPS[example]
    b = spawn("example-" + example, app, *args)
    for protocol in ("fastcgi", "scgi", "uwsgi"):
        r = b.request(protocol, path=path)
        assert (r.status, r.body) == (200, expected), (protocol, r)
    if example == "hello":
        assert r.header("Content-Length") == "13"
