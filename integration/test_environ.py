"""What the application sees in environ behind each front end (SPEC §3).

Every test runs once per front end × protocol variant (the ``fe`` fixture),
so one row of the matrix failing says which front end's quirk wsgi-fpm did
not absorb (BEHAVIOUR.md §3–§4 lists what each one sends).
"""
import json
import time

import pytest

import wire

BASIC = "Basic dXNlcjpzZWNyZXQ="  # user:secret


def latin1(text):
    """A path as PEP 3333 wants it: the UTF-8 bytes, decoded as latin-1."""
    return text.encode("utf-8").decode("latin-1")


def env_of(route, path, **kw):
    r = route.get(path, **kw)
    assert r.status == 200, r
    return r.json()


def test_query_string_stays_raw_and_path_info_is_decoded_latin1(fe):
    env = env_of(fe.route("main"), "/caf%C3%A9/x?a=1&b=%2F")
    assert env["QUERY_STRING"] == "a=1&b=%2F"
    assert env["PATH_INFO"] == latin1("/café/x")
    assert env["SCRIPT_NAME"] == ""
    assert env["REQUEST_METHOD"] == "GET"
    for key in ("PATH_INFO", "SCRIPT_NAME", "QUERY_STRING", "REQUEST_METHOD",
                "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL"):
        assert env["__types__"].get(key) == "str", (key, env["__types__"].get(key))


def test_without_mount_script_name_is_empty_and_path_info_is_the_whole_path(fe):
    # lighttpd puts the first segment in SCRIPT_NAME, Apache and nginx/FastCGI
    # the whole path, nginx/SCGI neither: wsgi-fpm must give the same answer.
    env = env_of(fe.route("main"), "/a/b.py/c/d%20e")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/a/b.py/c/d e")


def test_mount_prefix_becomes_script_name_and_the_rest_path_info(fe):
    route = fe.route("mounted")
    env = env_of(route, "/app/caf%C3%A9/x?a=1")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", latin1("/café/x"))
    assert env["QUERY_STRING"] == "a=1"
    env = env_of(route, "/app/")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/")


def test_repeated_headers_are_joined_with_comma_and_cookies_with_semicolon(fe):
    env = env_of(fe.route("main"), "/dup", headers=[
        ("X-Dup", "a"), ("X-Dup", "b"), ("Cookie", "c1=1"), ("Cookie", "c2=2")])
    assert env["HTTP_X_DUP"] == "a, b"
    if fe.frontend == "apache":
        # Apache merges the two Cookie headers itself, with ", ", before
        # wsgi-fpm sees one HTTP_COOKIE (BEHAVIOUR.md §3.2): nothing to join.
        assert env["HTTP_COOKIE"] == "c1=1, c2=2"
    else:
        # nginx sends two HTTP_COOKIE params, lighttpd joins them with "; ".
        assert env["HTTP_COOKIE"] == "c1=1; c2=2"


def test_authorization_header_is_hidden_from_the_application_by_default(fe):
    r = fe.route("main").get("/auth", headers=[("Authorization", BASIC)])
    assert r.status == 200, r
    env = r.json()
    assert "HTTP_AUTHORIZATION" not in env
    assert b"dXNlcjpzZWNyZXQ" not in r.body, "the credentials reached the application under another name"


def test_authorization_header_reaches_the_application_with_pass_authorization(fe):
    env = env_of(fe.route("passauth"), "/auth", headers=[("Authorization", BASIC)])
    assert env.get("HTTP_AUTHORIZATION") == BASIC


def test_content_length_and_type_are_not_duplicated_as_http_variables(fe):
    # nginx's stock params add HTTP_CONTENT_LENGTH/HTTP_CONTENT_TYPE (BEHAVIOUR.md §3.1).
    r = fe.route("main").request("POST", "/post", body=b"k=v",
                                 headers=[("Content-Type", "application/x-www-form-urlencoded")])
    assert r.status == 200, r
    env = r.json()
    assert env["CONTENT_LENGTH"] == "3"
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["__body__"] == "k=v"
    assert "HTTP_CONTENT_LENGTH" not in env
    assert "HTTP_CONTENT_TYPE" not in env


def test_environ_has_the_pep3333_and_wsgi_fpm_keys(fe):
    env = env_of(fe.route("main"), "/keys")
    types = env["__types__"]
    assert env["wsgi.version"] == [1, 0] and types["wsgi.version"] == "tuple"
    assert env["wsgi.url_scheme"] == "http"
    for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
        assert types.get(key) == "bool", (key, types.get(key))
    assert env["wsgi.run_once"] is False
    for key in ("wsgi.input", "wsgi.errors", "wsgi.file_wrapper", "wsgi_fpm.process_group",
                "wsgi_fpm.application_group", "wsgi_fpm.request_id"):
        assert key in env, key
    if fe.protocol == "fastcgi":
        # SPEC §3: a FastCGI body ends at the empty STDIN record.
        assert env["wsgi.input_terminated"] is True


def test_request_ids_differ_between_requests(fe):
    route = fe.route("main")
    ids = [env_of(route, "/id")["wsgi_fpm.request_id"] for _ in range(3)]
    assert len(set(ids)) == 3, ids


def test_queue_start_and_request_start_are_plausible_for_every_request(fe):
    route = fe.route("main")
    previous = 0.0
    for _ in range(3):  # also on kept-alive connections: per request
        t0 = time.time()
        env = env_of(route, "/times")
        t1 = time.time()
        q, s = env.get("wsgi_fpm.queue_start"), env.get("wsgi_fpm.request_start")
        assert env["__types__"].get("wsgi_fpm.queue_start") == "float", env["__types__"].get("wsgi_fpm.queue_start")
        assert env["__types__"].get("wsgi_fpm.request_start") == "float"
        assert t0 - 0.5 <= q <= s + 0.001, (t0, q, s)
        assert s <= t1 + 0.5, (s, t1)
        assert q > previous, "queue_start did not move on between requests"
        previous = q
        mod_wsgi = env.get("mod_wsgi.queue_start")
        assert isinstance(mod_wsgi, str) and mod_wsgi.isdigit(), mod_wsgi
        assert abs(int(mod_wsgi) / 1e6 - q) < 0.001, (mod_wsgi, q)


@pytest.mark.parametrize("param,value,scheme", [
    ("HTTPS", "on", "https"), ("HTTPS", "1", "https"), ("REQUEST_SCHEME", "https", "https"),
    ("HTTPS", "off", "http"),
])
def test_url_scheme_follows_https_and_request_scheme(stack, protocol, param, value, scheme):
    # The front ends here speak plain HTTP (wsgi.url_scheme 'http' is checked
    # above); the HTTPS=on variables are sent straight to wsgi-fpm.
    b = stack.backend("main")
    r = b.request(protocol, path="/scheme", scheme="http" if param == "HTTPS" else value,
                  extra=[(param, value)] if param == "HTTPS" else ())
    assert r.status == 200, r
    assert json.loads(r.body)["wsgi.url_scheme"] == scheme


def test_repeated_meta_variable_keeps_its_last_value_and_headers_join(stack, protocol):
    # nginx repeats params as they come (config overrides after the stock
    # params file); SPEC §3 says which value wins.
    # SCGI too: nginx sends repeated headers as repeated names there, so only
    # CONTENT_LENGTH and SCGI must be unique (protocol-specs/scgi.md).
    b = stack.backend("main")
    r = b.request(protocol, path="/dup", extra=[
        ("REMOTE_USER", "first"), ("REMOTE_USER", "last"),
        ("HTTP_X_DUP", "a"), ("HTTP_X_DUP", "b"),
        ("HTTP_COOKIE", "c1=1"), ("HTTP_COOKIE", "c2=2")])
    assert r.status == 200, r
    env = json.loads(r.body)
    assert env["REMOTE_USER"] == "last"
    assert env["HTTP_X_DUP"] == "a, b"
    assert env["HTTP_COOKIE"] == "c1=1; c2=2"


def test_two_different_content_lengths_are_a_bad_request(stack):
    b = stack.backend("main")
    params = wire.cgi_params("POST", "/upload", body_len=3, protocol="fastcgi") + [("CONTENT_LENGTH", "5")]
    sock = wire.connect(b.addr("fastcgi"), timeout=10)
    try:
        sock.sendall(wire.fcgi_begin() + wire.fcgi_params_block(params)
                     + wire.fcgi_record(wire.FCGI_STDIN, 1, b"abc") + wire.fcgi_record(wire.FCGI_STDIN, 1))
        closed, got = wire.wait_closed(sock, 5)
    finally:
        sock.close()
    assert b'"length"' not in got, "the application ran with two different CONTENT_LENGTHs: %r" % got[:300]


@pytest.mark.parametrize("stamp", ["t=1", "t=1e25", "t=%d" % (time.time() + 3600), "t=soon"])
def test_an_implausible_front_end_stamp_is_not_the_queue_start(stack, protocol, stamp):
    # A client's own X-Request-Start passed through: its arrival counts.
    before = time.time()
    r = stack.backend("main").request(protocol, path="/stamp", headers=[("X-Request-Start", stamp)])
    after = time.time()
    assert r.status == 200, r
    env = json.loads(r.body)
    assert before - 1 < env["wsgi_fpm.queue_start"] <= env["wsgi_fpm.request_start"] < after + 1, env
    assert abs(int(env["mod_wsgi.queue_start"]) / 1e6 - env["wsgi_fpm.queue_start"]) < 1e-3, env


@pytest.mark.parametrize("form", ["nginx-msec", "apache-microseconds"])
def test_front_end_request_start_stamp_becomes_queue_start(stack, protocol, form):
    stamp = time.time() - 2.5  # the front end saw the request 2.5 s ago
    value = "t=%.3f" % stamp if form == "nginx-msec" else "t=%d" % int(stamp * 1e6)
    r = stack.backend("main").request(protocol, path="/stamp", headers=[("X-Request-Start", value)])
    assert r.status == 200, r
    env = json.loads(r.body)
    assert abs(env["wsgi_fpm.queue_start"] - stamp) < 0.01, (value, env["wsgi_fpm.queue_start"])
    assert env["wsgi_fpm.request_start"] >= env["wsgi_fpm.queue_start"]


def test_a_front_end_variable_named_like_a_wsgi_key_never_replaces_it(spawn):
    # One thread, so the second request is a copy of the environ the first
    # one built, with the variable's value changed.
    from harness import APPS
    b = spawn("reserved", APPS / "env_app.py", "--processes", "1", "--threads", "1",
              protocols=("fastcgi",))
    for n in range(3):
        r = b.request("fastcgi", method="POST", path="/r", body=b"body%d" % n, extra=[
            ("wsgi.input", "forged%d" % n), ("wsgi.errors", "forged%d" % n),
            ("wsgi.url_scheme", "forged%d" % n), ("wsgi_fpm.request_id", "forged%d" % n)])
        assert r.status == 200, r
        env = json.loads(r.body)
        assert env["__body__"] == "body%d" % n, env
        assert env["wsgi.url_scheme"] == "http", env
        assert not env["wsgi_fpm.request_id"].startswith("forged"), env
        for key in ("wsgi.input", "wsgi.errors"):
            assert env["__types__"][key] != "str", (key, env)

