"""What wsgi-fpm does with the application's response (SPEC §3), and its
other listeners (Unix sockets, --http), straight to its sockets."""
import http.client
import json
import time
import uuid
from urllib.parse import quote

import pytest

import wire
from harness import APPS, HOST, free_ports

ROUTER = APPS / "router.py"


def wait_in_log(backend, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in backend.log_text():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("case", ["crlf", "hopbyhop", "negcl", "badcl", "badstatus"])
def test_invalid_response_head_gives_500_not_a_broken_response(stack, protocol, case):
    r = stack.backend("main").request(protocol, path="/response", query="case=" + case)
    assert r.status == 500, r
    assert b"Injected" not in r.raw


def test_a_kept_header_list_is_validated_again_after_every_change(spawn):
    # One thread, so every request meets the head it remembered last.
    b = spawn("kept-head", ROUTER, "--processes", "1", "--threads", "1", protocols=("fastcgi",))

    def kept(header=None):
        q = "case=kept" + ("" if header is None else "&header=" + quote(header))
        return b.request("fastcgi", path="/response", query=q)

    for _ in range(3):
        r = kept()
        assert (r.status, r.header("X-Kept"), r.body) == (200, "first", b"kept"), r
    r = kept("second")
    assert (r.status, r.header("X-Kept")) == (200, "second"), r
    assert kept().header("X-Kept") == "second"
    r = kept("a\r\nInjected: yes")
    assert r.status == 500 and b"Injected" not in r.raw, r
    # The bad tuple stays in the list: refused every time, never remembered.
    r = kept()
    assert r.status == 500 and b"Injected" not in r.raw, r
    r = kept("third")
    assert (r.status, r.header("X-Kept")) == (200, "third"), r


def test_objects_the_application_kept_are_never_handed_to_a_later_request(spawn):
    # One thread: every request meets the objects the last one left.
    b = spawn("keeper", ROUTER, "--processes", "1", "--threads", "1", protocols=("fastcgi",))

    def post(body, keep=False):
        r = b.request("fastcgi", method="POST", path="/keeper",
                      query="keep=1" if keep else "", body=body)
        assert r.status == 200, r
        return json.loads(r.body)

    first = post(b"one")
    again = post(b"two")
    assert (again["input"], again["errors"], again["body"]) == (first["input"], first["errors"], "two")
    post(b"three", keep=True)
    # The kept objects stay with the application, spent: this request has
    # its own, with its own body.
    after = post(b"four")
    assert after["body"] == "four"
    assert after["input"] != first["input"] and after["errors"] != first["errors"], after
    assert after["stashed_is_this"] == [False, False, False], after
    assert after["stashed_read"] in ("", "raised OSError", "raised ValueError"), after
    # The new objects are the thread's now, reused while nobody keeps them.
    later = post(b"five")
    assert (later["input"], later["errors"], later["body"]) == (after["input"], after["errors"], "five")
    assert later["stashed_is_this"] == [False, False, False], later


def test_content_beyond_content_length_is_not_sent(stack, protocol):
    r = stack.backend("main").request(protocol, path="/response", query="case=long")
    assert (r.status, r.body) == (200, b"0123456789"), r


def _case_then_ok_on_one_kept_connection(b, case):
    """`case` of /response, then `ok`, on one kept FastCGI connection: the
    first answer, and the seconds it took."""
    sock = wire.connect(b.addr("fastcgi"), timeout=10)
    try:
        started = time.monotonic()
        r = wire.fcgi_request(None, wire.cgi_params("GET", "/response", case, protocol="fastcgi"),
                              keep_conn=True, sock=sock)
        took = time.monotonic() - started
        again = wire.fcgi_request(None, wire.cgi_params("GET", "/response", "case=ok", protocol="fastcgi"),
                                  keep_conn=True, sock=sock)
        assert (again.status, again.body) == (200, b"hello"), again
        return r, took
    finally:
        sock.close()


def test_a_response_is_complete_once_its_content_length_is_reached(stack, protocol):
    """The front end has the whole response, end included, while the
    application's generator is still running (it sleeps before it stops):
    nothing more could go out after its declared length."""
    b = stack.backend("main")
    started = time.monotonic()
    if protocol == "fastcgi":
        # The kept connection serves the next request once the thread is free.
        r, took = _case_then_ok_on_one_kept_connection(b, "case=slowtail&sleep=3")
        assert (r.status, r.body, r.end) == (200, b"hello", (0, 0)), r
    else:
        # SCGI and uwsgi end a response by closing the connection, which
        # waits for the generator; the bytes are there before that.
        sock = wire.connect(b.addr(protocol), timeout=10)
        try:
            sock.sendall(wire.head_bytes(protocol, wire.cgi_params("GET", "/response", "case=slowtail&sleep=3",
                                                                   protocol=protocol)))
            got = b""
            while not got.endswith(b"hello"):
                data = sock.recv(1 << 16)
                assert data, got
                got += data
            took = time.monotonic() - started
        finally:
            sock.close()
    assert took < 2.0, "the response waited for the generator to stop (%.1f s)" % took


def test_an_exception_after_the_whole_response_is_logged_and_the_response_stands(stack):
    b = stack.backend("main")
    # Not cut, and the kept connection is not closed under the front end.
    r, _ = _case_then_ok_on_one_kept_connection(b, "case=raisetail")
    assert (r.status, r.body, r.end) == (200, b"hello", (0, 0)), r
    assert wait_in_log(b, "raised after its whole response had gone out; the response stands")
    assert wait_in_log(b, "raised after the whole body")


def test_response_shorter_than_content_length_is_logged_and_not_reused(stack):
    b = stack.backend("main")
    sock = wire.connect(b.addr("fastcgi"), timeout=10)
    try:
        params = wire.cgi_params("GET", "/response", "case=short", protocol="fastcgi")
        sock.sendall(wire.fcgi_begin(1, keep_conn=True) + wire.fcgi_params_block(params)
                     + wire.fcgi_record(wire.FCGI_STDIN, 1))
        # Either the stream is cut (no END_REQUEST) or it ends and the kept
        # connection is then closed: in both cases the connection must close.
        closed, got = wire.wait_closed(sock, 10)
    finally:
        sock.close()
    assert closed, "a kept FastCGI connection stayed open after a short response"
    assert b"0123456789" in got


def test_wsgi_errors_goes_to_the_error_log(stack, protocol):
    b = stack.backend("main")
    token = uuid.uuid4().hex
    r = b.request(protocol, path="/response", query="case=errors&token=" + token)
    assert r.status == 200
    assert wait_in_log(b, "wsgi.errors says " + token), "wsgi.errors output not in %s" % b.log


def test_map_head_to_get_shows_the_application_get(spawn):
    b = spawn("map-head", ROUTER, "--map-head-to-get", protocols=("fastcgi",))
    r = b.request("fastcgi", method="HEAD", path="/download", query="size=100")
    assert r.status == 200
    assert r.header("X-Seen-Method") == "GET"
    assert r.body == b""
    assert r.header("Content-Length") == "100"


def test_unix_socket_listeners_serve_every_protocol(spawn, run_dir):
    socks = {p: "%s/tmp/%s-%s.sock" % (run_dir, p, uuid.uuid4().hex[:8]) for p in ("fastcgi", "scgi", "uwsgi")}
    b = spawn("unix", ROUTER, *[a for p, path in socks.items() for a in ("--" + p, "unix:" + path)],
              protocols=("fastcgi",))
    for protocol, path in socks.items():
        r = wire.request(protocol, path, path="/hello")
        assert (r.status, r.body) == (200, b"Hello, world!"), (protocol, r)


def test_http_listener_serves_the_application(spawn):
    port = free_ports(1)[0]
    b = spawn("http", ROUTER, "--http", "%s:%d" % (HOST, port), protocols=("fastcgi",))
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/caf%C3%A9/x?a=1")
        resp = conn.getresponse()
        env = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == (
        "", "/café/x".encode().decode("latin-1"), "a=1")
