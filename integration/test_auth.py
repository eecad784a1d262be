"""The auth responder (SPEC §6): a Python auth script answering Apache httpd
mod_authnz_fcgi (types authn, authz, authnz), lighttpd's FastCGI authorizer
mode and nginx auth_request, with Basic and Digest (RFC 7616) credentials;
plus direct FastCGI requests for what no front end here sends
(FCGI_APACHE_ROLE=ACCESS_CHECKER) or for the exact shape of an answer.

The front ends run the very snippets in conf/*/auth.conf, each in a front-end
process of its own (harness.SitesFrontEnd), in front of three wsgi-fpm
instances serving tests/apps/auth_echo.py:

- main:   auth_script.py, Basic (the default with check_password),
          --auth-mount /_auth, --access-script access_script.py
- digest: auth_script.py, --auth-scheme digest
- short:  auth_digest_only.py (no check_password, no allow_access: Digest by
          default, ACCESS_CHECKER falls back to the access script),
          --auth-nonce-lifetime 1, --access-script access_script.py

Users and passwords: tests/apps/auth_script.py. What each front end sends
and does with the answer: shared/frontends/BEHAVIOUR.md §1.8 and §3.1.
"""
import base64
import hashlib
import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import client
import wire
from harness import APPS, HOST, SitesFrontEnd, answer_when_up, free_ports, tail, wsgi_fpm_bin

REALM = "wsgi-fpm tests"
BASIC_CHALLENGE = 'Basic realm="%s", charset="UTF-8"' % REALM

PASSWORDS = {
    "alice": "pw-alice-8c1d",
    "bob": "pw-bob-4f2a",
    "carol": "pw-carol-93be",
    "dave": "pw-dave-17d0",
    "erin": "pw-erin-6a55",
    "boom": "pw-boom-2c9e",
}
WRONG = "pw-wrong-5b7e"
SECRET = "the protected file's contents\n"


# ------------------------------------------------------------------ helpers

def basic(user, password):
    token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    return ("Authorization", "Basic " + token)


def creds(user, password=None):
    """Authorization header for `user` with the right password (or `password`)."""
    return [basic(user, PASSWORDS[user] if password is None else password)]


def challenges(reply):
    return [v for k, v in reply.headers if k.lower() == "www-authenticate"]


def each_challenge(reply):
    """The challenges of a reply, also those that share one header line
    (RFC 7235 allows a comma-separated list; Apache joins them so)."""
    out = []
    for value in challenges(reply):
        out += re.split(r",\s*(?=[A-Za-z][\w-]*\s+[\w-]+=)", value)
    return out


def tag():
    """A header marking one request, to tell whether it reached the application."""
    return ("X-Tag", uuid.uuid4().hex)


def app_runs(run_dir):
    try:
        return (Path(run_dir) / "tmp" / "auth_echo-runs.log").read_text().split()
    except OSError:
        return []


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


def get(port, path, headers=(), **kw):
    return client.request(port, "GET", path, headers=list(headers), **kw)


def md5(text):
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def parse_challenge(value):
    """'Digest realm="r", qop="auth", ...' → ("Digest", {name: value})."""
    scheme, _, rest = value.partition(" ")
    params = {}
    for m in re.finditer(r'([\w-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]*)', rest):
        params[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    return scheme, params


def digest_challenge(reply):
    """The Digest challenge of a 401 reply, checked for the shape SPEC §6 gives."""
    assert reply.status == 401, reply
    found = [parse_challenge(v) for v in challenges(reply)]
    digests = [p for s, p in found if s.lower() == "digest"]
    assert len(digests) == 1, "expected one Digest challenge: %r" % challenges(reply)
    ch = digests[0]
    assert ch.get("realm") == REALM, ch
    assert "auth" in [q.strip() for q in ch.get("qop", "").split(",")], ch
    assert ch.get("algorithm", "MD5").upper() == "MD5", ch
    assert ch.get("nonce"), ch
    return ch


def digest_authorization(ch, user, password, method, uri, nc=1, algorithm="MD5", cnonce=None,
                         realm=None):
    """An RFC 7616 Authorization header value (qop=auth, MD5 or MD5-sess)."""
    realm = ch["realm"] if realm is None else realm
    cnonce = cnonce or uuid.uuid4().hex
    nonce = ch["nonce"]
    ha1 = md5("%s:%s:%s" % (user, realm, password))
    if algorithm.upper() == "MD5-SESS":
        ha1 = md5("%s:%s:%s" % (ha1, nonce, cnonce))
    ha2 = md5("%s:%s" % (method, uri))
    ncs = "%08x" % nc
    response = md5(":".join((ha1, nonce, ncs, cnonce, "auth", ha2)))
    parts = ['username="%s"' % user, 'realm="%s"' % realm, 'nonce="%s"' % nonce, 'uri="%s"' % uri,
             "algorithm=%s" % algorithm, 'response="%s"' % response, "qop=auth", "nc=" + ncs,
             'cnonce="%s"' % cnonce]
    if "opaque" in ch:
        parts.append('opaque="%s"' % ch["opaque"])
    return "Digest " + ", ".join(parts)


def fcgi_authorizer(addr, params, timeout=10.0):
    """A FastCGI AUTHORIZER request as Apache and lighttpd send it: the
    params and no STDIN record at all (BEHAVIOUR.md §1.8)."""
    s = wire.connect(addr, timeout)
    try:
        s.sendall(wire.fcgi_begin(1, role=wire.FCGI_AUTHORIZER) + wire.fcgi_params_block(params))
        out, err, end = wire.FcgiReader(s).response(1)
    finally:
        s.close()
    status, reason, headers, body = wire.parse_head(out, "cgi")
    return wire.Response(status, reason, headers, body, out, end, err)


def apache_params(role, user=None, password=None, headers=(), extra=()):
    """What mod_authnz_fcgi sends (captured: apache-authnz-fcgi-*.txt)."""
    params = [
        ("HTTP_HOST", "127.0.0.1:30081"), ("HTTP_USER_AGENT", "curl/7.88.1"), ("HTTP_ACCEPT", "*/*"),
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("SERVER_SIGNATURE", ""), ("SERVER_SOFTWARE", "Apache/2.4.71 (Debian)"),
        ("SERVER_NAME", "127.0.0.1"), ("SERVER_ADDR", "127.0.0.1"), ("SERVER_PORT", "30081"),
        ("REMOTE_ADDR", "127.0.0.1"), ("DOCUMENT_ROOT", "/srv/www"), ("REQUEST_SCHEME", "http"),
        ("CONTEXT_PREFIX", ""), ("CONTEXT_DOCUMENT_ROOT", "/srv/www"),
        ("SERVER_ADMIN", "[no address given]"),
        ("SCRIPT_FILENAME", "proxy:fcgi://127.0.0.1:30011/ok/page"), ("REMOTE_PORT", "50164"),
    ]
    for name, value in headers:
        params.append(("HTTP_" + name.upper().replace("-", "_"), value))
    if user is not None:
        params += [("REMOTE_USER", user), ("AUTH_TYPE", "Basic")]
    params += [("GATEWAY_INTERFACE", "CGI/1.1"), ("SERVER_PROTOCOL", "HTTP/1.1"),
               ("REQUEST_METHOD", "GET"), ("QUERY_STRING", "q=1"), ("REQUEST_URI", "/ok/page?q=1"),
               ("FCGI_ROLE", "AUTHORIZER"), ("FCGI_APACHE_ROLE", role)]
    if password is not None:
        params.append(("REMOTE_PASSWD", password))
    return params + list(extra)


def nginx_auth_params(request_uri, document_uri="/_auth", headers=(), extra=()):
    """What nginx's auth_request subrequest sends (captured: nginx-fastcgi-auth-request.txt)."""
    params = [("QUERY_STRING", ""), ("REQUEST_METHOD", "GET"), ("CONTENT_TYPE", ""),
              ("CONTENT_LENGTH", ""), ("SCRIPT_NAME", document_uri), ("REQUEST_URI", request_uri),
              ("DOCUMENT_URI", document_uri), ("DOCUMENT_ROOT", "/srv/www"),
              ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"),
              ("GATEWAY_INTERFACE", "CGI/1.1"), ("SERVER_SOFTWARE", "nginx/1.22.1"),
              ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "38410"), ("SERVER_ADDR", "127.0.0.1"),
              ("SERVER_PORT", "30080"), ("SERVER_NAME", "localhost"), ("REDIRECT_STATUS", "200"),
              ("HTTP_HOST", "127.0.0.1")]
    params += list(extra)
    for name, value in headers:
        params.append(("HTTP_" + name.upper().replace("-", "_"), value))
    return params


def header_names(response):
    return sorted(k.lower() for k, _ in response.headers)


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def instances(spawn_module):
    common = ["--processes", "1", "--threads", "4", "--auth-realm", REALM, "--auth-mount", "/_auth"]
    app = APPS / "auth_echo.py"
    main = spawn_module("auth-main", app, *common, "--auth-script", APPS / "auth_script.py",
                        "--access-script", APPS / "access_script.py", protocols=("fastcgi",))
    digest = spawn_module("auth-digest", app, *common, "--auth-script", APPS / "auth_script.py",
                          "--auth-scheme", "digest", protocols=("fastcgi",))
    short = spawn_module("auth-short", app, *common, "--auth-script", APPS / "auth_digest_only.py",
                         "--auth-nonce-lifetime", "1", "--access-script", APPS / "access_script.py",
                         protocols=("fastcgi",))
    return {"main": main, "digest": digest, "short": short}


def _site(b, name):
    return {"BACKEND_PORT": b.ports["fastcgi"], "REALM": REALM, "NAME": name}


def _start(request, fe):
    request.addfinalizer(fe.stop)
    return fe


def _htpasswd_sha(password):
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


@pytest.fixture(scope="module")
def apache_fe(request, run_dir, instances):
    site = _site(instances["main"], "wsgi_fpm_auth_main")
    site["HTPASSWD"] = lambda d: d / "htpasswd"
    htpasswd = "".join("%s:%s\n" % (u, _htpasswd_sha(PASSWORDS[u])) for u in ("alice", "bob", "erin"))
    return _start(request, SitesFrontEnd(run_dir, "apache", {"main": ("auth.conf", site)},
                                         files={"htpasswd": htpasswd}, label="auth"))


@pytest.fixture(scope="module")
def apache(apache_fe):
    return apache_fe.ports["main"]


@pytest.fixture(scope="module")
def lighttpd(request, run_dir, instances):
    fe = _start(request, SitesFrontEnd(
        run_dir, "lighttpd",
        {"main": ("auth.conf", _site(instances["main"], "main")),
         "digest": ("auth.conf", _site(instances["digest"], "digest"))},
        files={"htdocs/files/secret.txt": SECRET}, label="auth"))
    return fe.ports


@pytest.fixture(scope="module")
def nginx(request, run_dir, instances):
    fe = _start(request, SitesFrontEnd(
        run_dir, "nginx", {name: ("auth.conf", _site(instances[name], name))
                           for name in ("main", "digest", "short")}, label="auth"))
    return fe.ports


# ------------------------------------------------------------------ the test client itself

def test_the_tests_digest_client_matches_rfc7616s_example():
    # RFC 7616 §3.9.1 (MD5): checks our client arithmetic, so that a Digest
    # test failing below means the server, not the test.
    ch = {"realm": "http-auth@example.org", "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
          "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"}
    value = digest_authorization(ch, "Mufasa", "Circle of Life", "GET", "/dir/index.html", nc=1,
                                 cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert 'response="8ca523f5e9506fed4657c9700eebdbec"' in value


# ------------------------------------------------------------------ Apache mod_authnz_fcgi

def test_apache_authn_lets_the_right_password_through_and_refuses_the_rest(apache, run_dir):
    r = get(apache, "/authn/page?q=1", creds("alice"))
    assert r.status == 200, r
    env = r.json()
    assert (env["REMOTE_USER"], env["AUTH_TYPE"]) == ("alice", "Basic")
    assert "REMOTE_PASSWD" not in env
    # Apache copies any non-Variable header of a 200 authorizer answer to the
    # client (BEHAVIOUR.md §1.8): the answer must carry nothing else.
    assert not [k for k, _ in r.headers if k.lower() in ("x-remote-user", "x-groups", "www-authenticate")
                or k.lower().startswith("variable-")], r.headers
    for who, headers in [("wrong password", creds("alice", WRONG)),
                         ("unknown user", [basic("zed", WRONG)]),
                         ("no credentials", [])]:
        t = tag()
        r = get(apache, "/authn/page", headers + [t])
        assert r.status == 401, (who, r)
        # Type authn: the 401 and its challenge are Apache's own, realm = AuthName.
        assert challenges(r) == ['Basic realm="%s"' % REALM], (who, r.headers)
        assert t[1] not in app_runs(run_dir), who


def test_apache_authn_passes_the_scripts_variables_to_the_application(apache):
    env = get(apache, "/authn/x", creds("dave")).json()
    assert (env["REMOTE_USER"], env["PROCESS_GROUP"], env["AUTH_SOURCE"]) == ("dave", "blue", "table")
    # check_password returned "Carol" for carol: wsgi-fpm says so with
    # Variable-REMOTE_USER, but for type authn Apache keeps the name the
    # client typed as the user it passes on (captured; type authnz with
    # UserExpr uses the canonical one, see below).
    r = get(apache, "/authn/x", creds("carol"))
    assert r.status == 200, r
    assert r.json()["REMOTE_USER"] == "carol"


def test_apache_authz_asks_groups_for_user_and_a_refusal_reaches_the_client_as_401(apache, apache_fe, run_dir):
    # /authz/: the password is checked by Apache (htpasswd), the group
    # (admins, from SetEnvIf WSGI_FPM_REQUIRE_GROUP) by wsgi-fpm in the
    # AUTHORIZER role.
    r = get(apache, "/authz/x", creds("alice"))
    assert r.status == 200, r
    assert r.json()["REMOTE_USER"] == "alice"
    for user in ("bob", "erin"):   # not an admin; groups_for_user raises
        t = tag()
        r = get(apache, "/authz/x", creds(user) + [t])
        # wsgi-fpm answers 403; Apache turns an authz refusal of an
        # authenticated user into 401 with its own challenge (BEHAVIOUR.md §1.8).
        assert r.status == 401, (user, r)
        assert challenges(r) == ['Basic realm="%s"' % REALM], r.headers
        assert t[1] not in app_runs(run_dir)
        # The password was right (htpasswd): Apache logs the refusal as authz's.
        log = apache_fe.dir / "logs" / "error.log"
        wait_for(lambda: "user %s: authorization failure" % user in log.read_text(errors="replace"),
                 what="Apache's authorization failure for %s in %s" % (user, log))


def test_apache_authnz_relays_wsgi_fpms_challenge_and_uses_the_canonical_name(apache, run_dir):
    r = get(apache, "/authnz/x", creds("alice"))
    assert r.status == 200, r
    assert r.json()["REMOTE_USER"] == "alice"
    # UserExpr "%{reqenv:REMOTE_USER}": the name from Variable-REMOTE_USER.
    assert get(apache, "/authnz/x", creds("carol")).json()["REMOTE_USER"] == "Carol"
    env = get(apache, "/authnz/x", creds("dave")).json()
    assert (env["REMOTE_USER"], env["PROCESS_GROUP"], env["AUTH_SOURCE"]) == ("dave", "blue", "table")
    for who, headers in [("wrong password", creds("alice", WRONG)),
                         ("unknown user", [basic("zed", WRONG)]),
                         ("no credentials", [])]:
        t = tag()
        r = get(apache, "/authnz/x", headers + [t])
        assert r.status == 401, (who, r)
        # Type authnz relays the authorizer's own challenge. With no
        # credentials at all Apache adds its own first, in the same header
        # line: 'Basic realm="R", Basic realm="R", charset="UTF-8"'.
        assert BASIC_CHALLENGE in each_challenge(r), (who, r.headers)
        assert t[1] not in app_runs(run_dir)


def test_apache_authnz_checks_the_group_requirement_in_the_same_call(apache, run_dir):
    assert get(apache, "/authnz-admins/x", creds("alice")).status == 200
    t = tag()
    r = get(apache, "/authnz-admins/x", creds("bob") + [t])
    assert r.status == 401, r
    assert BASIC_CHALLENGE in each_challenge(r), r.headers
    assert t[1] not in app_runs(run_dir)


def test_apache_a_raising_check_password_grants_nothing(apache, run_dir):
    for path in ("/authn/x", "/authnz/x"):
        t = tag()
        r = get(apache, path, creds("boom") + [t])
        # 500 from the authorizer: AUTH_GENERAL_ERROR (authn) / relayed (authnz).
        assert r.status == 500, (path, r)
        assert t[1] not in app_runs(run_dir)


# ------------------------------------------------------------------ lighttpd authorizer

def test_lighttpd_authorizer_protects_a_static_file(lighttpd, instances):
    port = lighttpd["main"]
    r = get(port, "/files/secret.txt", creds("alice"))
    assert (r.status, r.body) == (200, SECRET.encode()), r
    for who, headers in [("wrong password", creds("alice", WRONG)),
                         ("unknown user", [basic("zed", WRONG)]),
                         ("no credentials", [])]:
        r = get(port, "/files/secret.txt", headers)
        assert r.status == 401, (who, r)
        assert challenges(r) == [BASIC_CHALLENGE], (who, r.headers)
        assert SECRET.encode() not in r.body


def test_lighttpd_authorizer_hands_user_and_variables_to_the_application(lighttpd, run_dir):
    port = lighttpd["main"]
    env = get(port, "/app/x?y=1", creds("dave")).json()
    assert (env["REMOTE_USER"], env["PROCESS_GROUP"], env["AUTH_SOURCE"]) == ("dave", "blue", "table")
    assert env["REQUEST_URI"] == "/app/x?y=1"
    # lighttpd passes Authorization on to the application; wsgi-fpm hides it
    # (no --pass-authorization).
    assert "HTTP_AUTHORIZATION" not in env
    assert get(port, "/app/x", creds("carol")).json()["REMOTE_USER"] == "Carol"
    t = tag()
    r = get(port, "/app/x", creds("carol", WRONG) + [t])
    assert r.status == 401, r
    assert t[1] not in app_runs(run_dir)


def test_lighttpd_group_requirement_from_setenv_gives_403(lighttpd, run_dir):
    port = lighttpd["main"]
    r = get(port, "/admin/x", creds("alice"))
    assert r.status == 200, r
    assert r.json()["REMOTE_USER"] == "alice"
    for user in ("bob", "erin"):   # not an admin; groups_for_user raises
        t = tag()
        r = get(port, "/admin/x", creds(user) + [t])
        assert r.status == 403, (user, r)
        assert t[1] not in app_runs(run_dir)
    # The wrong password is still 401, not 403.
    assert get(port, "/admin/x", creds("alice", WRONG)).status == 401


def test_lighttpd_allow_access_denies_a_host_before_the_password(lighttpd):
    port = lighttpd["main"]
    # host is REMOTE_ADDR (127.0.0.1): listed → 403 even with the right password.
    r = get(port, "/files/secret.txt", creds("alice") + [("X-Deny-Hosts", "10.1.2.3, 127.0.0.1")])
    assert r.status == 403, r
    assert SECRET.encode() not in r.body
    r = get(port, "/files/secret.txt", [("X-Deny-Hosts", "127.0.0.1")])
    assert r.status == 403, r
    r = get(port, "/files/secret.txt", creds("alice") + [("X-Deny-Hosts", "10.1.2.3")])
    assert r.status == 200, r
    # allow_access raising denies.
    r = get(port, "/files/secret.txt", creds("alice") + [("X-Deny-Hosts", "raise")])
    assert r.status == 403, r


def test_lighttpd_digest_md5_and_md5_sess(lighttpd, run_dir):
    port = lighttpd["digest"]
    ch = digest_challenge(get(port, "/files/secret.txt"))
    value = digest_authorization(ch, "alice", PASSWORDS["alice"], "GET", "/files/secret.txt",
                                 algorithm="MD5-sess")
    r = get(port, "/files/secret.txt", [("Authorization", value)])
    assert (r.status, r.body) == (200, SECRET.encode()), r
    ch = digest_challenge(get(port, "/app/d?x=1"))
    value = digest_authorization(ch, "dave", PASSWORDS["dave"], "GET", "/app/d?x=1")
    r = get(port, "/app/d?x=1", [("Authorization", value)])
    assert r.status == 200, r
    # (Digest asks get_realm_hash, not check_password: no variables.)
    assert r.json()["REMOTE_USER"] == "dave"
    value = digest_authorization(ch, "bob", WRONG, "GET", "/app/d?x=1", nc=2)
    t = tag()
    r = get(port, "/app/d?x=1", [("Authorization", value), t])
    assert r.status == 401, r
    digest_challenge(r)
    assert t[1] not in app_runs(run_dir)


def test_lighttpd_a_raising_script_grants_nothing(lighttpd, run_dir):
    port = lighttpd["main"]
    r = get(port, "/files/secret.txt", creds("boom"))
    assert r.status == 500, r
    assert SECRET.encode() not in r.body
    t = tag()
    assert get(port, "/app/x", creds("boom") + [t]).status == 500
    assert t[1] not in app_runs(run_dir)


# ------------------------------------------------------------------ nginx auth_request

def test_nginx_auth_request_lets_the_right_password_through_and_refuses_the_rest(nginx, run_dir):
    port = nginx["main"]
    r = get(port, "/private/x?q=1", creds("alice"))
    assert r.status == 200, r
    env = r.json()
    assert env["REMOTE_USER"] == "alice"
    assert env["REQUEST_URI"] == "/private/x?q=1"
    # X-Groups, passed on by auth_request_set as AUTH_GROUPS.
    assert sorted(g.strip() for g in env["AUTH_GROUPS"].split(",")) == ["admins", "staff"]
    assert "PROCESS_GROUP" not in env     # the script returned no variables for alice
    for who, headers in [("wrong password", creds("alice", WRONG)),
                         ("unknown user", [basic("zed", WRONG)]),
                         ("no credentials", [])]:
        t = tag()
        r = get(port, "/private/x", headers + [t])
        assert r.status == 401, (who, r)
        assert challenges(r) == [BASIC_CHALLENGE], (who, r.headers)
        assert t[1] not in app_runs(run_dir)


def test_nginx_auth_request_hands_canonical_name_and_variables_to_the_application(nginx):
    port = nginx["main"]
    # The stock fastcgi_params also send REMOTE_USER=carol (the unverified
    # Basic user); the auth answer's X-Remote-User comes later and wins.
    assert get(port, "/private/x", creds("carol")).json()["REMOTE_USER"] == "Carol"
    env = get(port, "/private/x", creds("dave")).json()
    assert (env["REMOTE_USER"], env["PROCESS_GROUP"]) == ("dave", "blue")


def test_nginx_group_requirement_param_gives_403(nginx, run_dir):
    port = nginx["main"]
    r = get(port, "/admin/x", creds("alice"))
    assert r.status == 200, r
    assert r.json()["REMOTE_USER"] == "alice"
    for user in ("bob", "erin"):   # not an admin; groups_for_user raises
        t = tag()
        r = get(port, "/admin/x", creds(user) + [t])
        assert r.status == 403, (user, r)
        assert t[1] not in app_runs(run_dir)
    r = get(port, "/admin/x", creds("bob", WRONG))
    assert r.status == 401, r
    assert challenges(r) == [BASIC_CHALLENGE]


def test_nginx_allow_access_and_the_access_script(nginx, run_dir):
    port = nginx["main"]
    # The auth script's allow_access, in the auth check.
    t = tag()
    r = get(port, "/private/x", creds("alice") + [("X-Deny-Hosts", "127.0.0.1"), t])
    assert r.status == 403, r
    assert t[1] not in app_runs(run_dir)
    # The access script (--access-script), before the application itself:
    # the auth check passes (auth_script.py ignores X-Block-Hosts), the
    # application request is refused and the application never runs.
    t = tag()
    r = get(port, "/private/x", creds("alice") + [("X-Block-Hosts", "127.0.0.1"), t])
    assert r.status == 403, r
    assert t[1] not in app_runs(run_dir)
    t = tag()
    r = get(port, "/private/x", creds("alice") + [("X-Block-Hosts", "raise"), t])
    assert r.status == 403, r
    assert t[1] not in app_runs(run_dir)
    t = tag()
    r = get(port, "/private/x", creds("alice") + [("X-Block-Hosts", "10.1.2.3"), t])
    assert r.status == 200, r
    assert t[1] in app_runs(run_dir)


def test_nginx_a_raising_check_password_grants_nothing(nginx, run_dir):
    t = tag()
    r = get(nginx["main"], "/private/x", creds("boom") + [t])
    # nginx answers 500 to any auth answer other than 2xx, 401, 403.
    assert r.status == 500, r
    assert t[1] not in app_runs(run_dir)


def test_nginx_digest_md5_md5_sess_and_replay(nginx, run_dir):
    port = nginx["digest"]
    uri = "/private/d?x=1"
    ch = digest_challenge(get(port, uri))
    assert ch.get("stale", "false").lower() == "false", ch
    r = get(port, uri, [("Authorization", digest_authorization(ch, "alice", PASSWORDS["alice"], "GET", uri))])
    assert r.status == 200, r
    assert r.json()["REMOTE_USER"] == "alice"
    # The same nonce and nc again: a replay.
    t = tag()
    replay = digest_authorization(ch, "alice", PASSWORDS["alice"], "GET", uri, nc=1)
    r = get(port, uri, [("Authorization", replay), t])
    assert r.status == 401, r
    digest_challenge(r)
    assert t[1] not in app_runs(run_dir)
    # The same nonce with a higher nc is a new request.
    r = get(port, uri, [("Authorization", digest_authorization(ch, "alice", PASSWORDS["alice"], "GET", uri, nc=2))])
    assert r.status == 200, r
    # MD5-sess, on a fresh nonce.
    ch = digest_challenge(get(port, uri))
    value = digest_authorization(ch, "dave", PASSWORDS["dave"], "GET", uri, algorithm="MD5-sess")
    r = get(port, uri, [("Authorization", value)])
    assert r.status == 200, r
    assert r.json()["REMOTE_USER"] == "dave"
    # Wrong password and unknown user.
    for user, password in (("alice", WRONG), ("zed", WRONG)):
        ch = digest_challenge(get(port, uri))
        t = tag()
        r = get(port, uri, [("Authorization", digest_authorization(ch, user, password, "GET", uri)), t])
        assert r.status == 401, (user, r)
        assert digest_challenge(r).get("stale", "false").lower() == "false"
        assert t[1] not in app_runs(run_dir)
    # get_realm_hash raising grants nothing (500, as check_password).
    ch = digest_challenge(get(port, uri))
    t = tag()
    r = get(port, uri, [("Authorization", digest_authorization(ch, "boom", PASSWORDS["boom"], "GET", uri)), t])
    assert r.status == 500, r
    assert t[1] not in app_runs(run_dir)
    # Group requirement with Digest credentials.
    ch = digest_challenge(get(port, "/admin/d"))
    r = get(port, "/admin/d", [("Authorization", digest_authorization(ch, "bob", PASSWORDS["bob"], "GET", "/admin/d"))])
    assert r.status == 403, r


def test_nginx_digest_with_curl(nginx):
    # A real client's Digest: curl answers the challenge itself.
    url = "http://127.0.0.1:%d/private/curl?a=1" % nginx["digest"]
    out = subprocess.run(["curl", "-s", "--max-time", "20", "--digest", "-u", "alice:" + PASSWORDS["alice"],
                          "-w", "\n%{http_code}", url], capture_output=True, text=True, timeout=30)
    body, _, code = out.stdout.rpartition("\n")
    assert code == "200", out
    assert json.loads(body)["REMOTE_USER"] == "alice"
    out = subprocess.run(["curl", "-s", "--max-time", "20", "--digest", "-u", "alice:" + WRONG,
                          "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True, text=True, timeout=30)
    assert out.stdout == "401", out


def test_nginx_expired_nonce_is_stale_and_digest_is_the_default_without_check_password(nginx):
    # "short": auth_digest_only.py has no check_password → Digest challenge
    # without --auth-scheme; nonces live 1 s.
    port = nginx["short"]
    uri = "/private/s"
    ch = digest_challenge(get(port, uri))
    assert not [c for c in challenges(get(port, uri)) if c.lower().startswith("basic")]
    # Use the nonce with ever higher nc until it expires (each use in time
    # is a 200).
    statuses, stale = [], None
    deadline = time.monotonic() + 15
    nc = 0
    while time.monotonic() < deadline:
        nc += 1
        r = get(port, uri, [("Authorization", digest_authorization(ch, "alice", PASSWORDS["alice"], "GET", uri, nc=nc))])
        statuses.append(r.status)
        if r.status != 200:
            stale = r
            break
        time.sleep(0.2)
    assert stale is not None, "the nonce never expired (--auth-nonce-lifetime 1): %r" % statuses
    assert stale.status == 401, (statuses, stale)
    fresh = digest_challenge(stale)
    assert fresh.get("stale", "").lower() == "true", fresh
    assert fresh["nonce"] != ch["nonce"]
    # The nonce of the stale challenge works (a client retries with it
    # without asking the user again); retried on a fresh challenge in case
    # a slow machine let this one expire too.
    ok = []
    for attempt in range(3):
        value = digest_authorization(fresh, "alice", PASSWORDS["alice"], "GET", uri)
        r = get(port, uri, [("Authorization", value)])
        ok.append(r.status)
        if r.status == 200:
            break
        fresh = digest_challenge(r)
    assert 200 in statuses + ok, (statuses, ok)
    assert ok[-1] == 200, ok


# ------------------------------------------------------------------ direct FastCGI

def test_authorizer_200_carries_only_status_and_variables_and_comes_without_stdin(instances):
    addr = instances["main"].addr("fastcgi")
    r = fcgi_authorizer(addr, apache_params("AUTHENTICATOR", "alice", PASSWORDS["alice"]))
    assert r.end == (0, wire.FCGI_REQUEST_COMPLETE), r
    assert r.status == 200, r
    assert header_names(r) == ["status", "variable-remote_user"], r.headers
    assert r.header("Variable-REMOTE_USER") == "alice"
    assert r.body == b""
    r = fcgi_authorizer(addr, apache_params("AUTHENTICATOR", "dave", PASSWORDS["dave"]))
    assert r.status == 200, r
    assert header_names(r) == ["status", "variable-auth_source", "variable-process_group",
                               "variable-remote_user"], r.headers
    assert (r.header("Variable-REMOTE_USER"), r.header("Variable-PROCESS_GROUP"),
            r.header("Variable-AUTH_SOURCE")) == ("dave", "blue", "table")
    r = fcgi_authorizer(addr, apache_params("AUTHENTICATOR", "carol", PASSWORDS["carol"]))
    assert (r.status, r.header("Variable-REMOTE_USER")) == (200, "Carol"), r
    # Credentials from HTTP_AUTHORIZATION when REMOTE_USER/REMOTE_PASSWD are absent.
    r = fcgi_authorizer(addr, apache_params("AUTHENTICATOR", headers=creds("bob")))
    assert (r.status, r.header("Variable-REMOTE_USER")) == (200, "bob"), r


def test_authenticator_refusals_and_group_requirement(instances):
    addr = instances["main"].addr("fastcgi")
    for who, user, password in [("wrong password", "alice", WRONG), ("unknown user", "zed", WRONG),
                                ("no credentials", None, None)]:
        r = fcgi_authorizer(addr, apache_params("AUTHENTICATOR", user, password))
        assert r.status == 401, (who, r)
        assert r.header("WWW-Authenticate") == BASIC_CHALLENGE, (who, r.headers)
        assert not [k for k, _ in r.headers if k.lower().startswith("variable-")], (who, r.headers)
    require = [("WSGI_FPM_REQUIRE_GROUP", "admins")]
    r = fcgi_authorizer(addr, apache_params("AUTHENTICATOR", "alice", PASSWORDS["alice"], extra=require))
    assert r.status == 200, r
    r = fcgi_authorizer(addr, apache_params("AUTHENTICATOR", "bob", PASSWORDS["bob"], extra=require))
    assert r.status == 401, r
    assert r.header("Variable-REMOTE_USER") is None, r.headers


def test_authorizer_role_checks_groups_against_the_requirement(instances):
    addr = instances["main"].addr("fastcgi")

    def ask(user, groups=None):
        extra = [] if groups is None else [("WSGI_FPM_REQUIRE_GROUP", groups)]
        return fcgi_authorizer(addr, apache_params("AUTHORIZER", user, extra=extra)).status

    assert ask("alice", "admins") == 200
    assert ask("bob", "admins") == 403
    assert ask("bob", "wheel, staff") == 200      # a list: commas ...
    assert ask("bob", "wheel admins") == 403      # ... or spaces
    assert ask("bob", "wheel staff") == 200
    assert ask("erin", "admins") == 403           # groups_for_user raises
    assert ask("zed", "admins") == 403            # no such user: no groups
    assert ask("bob") == 200                      # no requirement: any user


def test_access_checker_role_uses_allow_access(instances):
    main = instances["main"].addr("fastcgi")

    def ask(addr, headers):
        return fcgi_authorizer(addr, apache_params("ACCESS_CHECKER", headers=headers)).status

    assert ask(main, [("X-Deny-Hosts", "127.0.0.1")]) == 403
    assert ask(main, [("X-Deny-Hosts", "10.9.9.9")]) == 200
    assert ask(main, [("X-Deny-Hosts", "raise")]) == 403
    # The auth script has allow_access: the access script is not asked.
    assert ask(main, [("X-Block-Hosts", "127.0.0.1")]) == 200
    # auth_digest_only.py has no allow_access: the access script answers.
    short = instances["short"].addr("fastcgi")
    assert ask(short, [("X-Block-Hosts", "127.0.0.1")]) == 403
    assert ask(short, [("X-Block-Hosts", "10.9.9.9")]) == 200
    assert ask(short, [("X-Deny-Hosts", "127.0.0.1")]) == 200


def test_a_raising_check_password_is_500_and_its_traceback_is_logged(instances):
    b = instances["main"]
    before = b.log_text().count("UserDatabaseDown")
    r = fcgi_authorizer(b.addr("fastcgi"), apache_params("AUTHENTICATOR", "boom", PASSWORDS["boom"]))
    assert r.status == 500, r
    assert not [k for k, _ in r.headers if k.lower().startswith("variable-")], r.headers
    r = wire.fcgi_request(b.addr("fastcgi"), nginx_auth_params("/private/x", headers=creds("boom")))
    assert r.status == 500, r
    assert r.header("X-Remote-User") is None, r.headers
    wait_for(lambda: b.log_text().count("UserDatabaseDown") >= before + 2,
             what="the exception of check_password, twice, in %s:\n%s" % (b.log, tail(b.log)))
    assert "Traceback" in b.log_text(), tail(b.log)


def test_responder_auth_check_is_found_by_mount_or_param_and_trusts_only_authorization(instances, run_dir):
    addr = instances["main"].addr("fastcgi")
    for doc in ("/_auth", "/_auth/deeper"):
        r = wire.fcgi_request(addr, nginx_auth_params("/private/x", doc, headers=creds("alice")))
        assert r.status == 200, (doc, r)
        assert r.header("X-Remote-User") == "alice", r.headers
        assert sorted(r.header("X-Groups", "").split(",")) == ["admins", "staff"], r.headers
    # /_authx is not under the mount: the application answers it.
    t = tag()
    r = wire.fcgi_request(addr, nginx_auth_params("/_authx", "/_authx", headers=creds("alice") + [t]))
    assert r.status == 200 and r.header("X-Remote-User") is None, r
    assert t[1] in app_runs(run_dir)
    # ... unless the front end marks it as an auth check.
    r = wire.fcgi_request(addr, nginx_auth_params("/private/x", "/elsewhere", extra=[("WSGI_FPM_AUTH", "1")]))
    assert r.status == 401, r
    assert r.header("WWW-Authenticate") == BASIC_CHALLENGE
    # nginx's stock REMOTE_USER (the unverified Basic user) is never trusted,
    # nor a REMOTE_PASSWD param, on a RESPONDER auth check.
    r = wire.fcgi_request(addr, nginx_auth_params("/private/x", extra=[
        ("REMOTE_USER", "alice"), ("REMOTE_PASSWD", PASSWORDS["alice"])]))
    assert r.status == 401, r
    r = wire.fcgi_request(addr, nginx_auth_params("/private/x", headers=creds("alice", WRONG),
                                                  extra=[("REMOTE_USER", "alice")]))
    assert r.status == 401, r


def test_digest_uri_must_be_the_requests_uri(instances):
    addr = instances["digest"].addr("fastcgi")

    def ask(request_uri, value=None, extra=()):
        headers = [("Authorization", value)] if value else []
        return wire.fcgi_request(addr, nginx_auth_params(request_uri, headers=headers, extra=extra))

    ch = digest_challenge(ask("/private/x?q=1"))
    # Signed for another URI: 401 with a fresh challenge (nginx auth_request
    # would make a 400 into a 500 for the client), the reason in the log.
    r = ask("/private/x?q=1", digest_authorization(ch, "alice", PASSWORDS["alice"], "GET", "/private/other"))
    assert r.status == 401, r
    assert r.header("WWW-Authenticate").startswith("Digest "), r
    r = ask("/private/x?q=1", digest_authorization(ch, "alice", PASSWORDS["alice"], "GET", "/private/x?q=1", nc=2))
    assert r.status == 200, r
    # X_ORIGINAL_URI, when the front end sends it, names the protected URI.
    r = ask("/_auth", digest_authorization(ch, "alice", PASSWORDS["alice"], "GET", "/private/y", nc=3),
            extra=[("X_ORIGINAL_URI", "/private/y")])
    assert r.status == 200, r


def test_auth_keys_of_a_toml_pool(run_dir):
    # The same options as pool keys (SPEC §5); auth-require-group applies to
    # every check that brings no WSGI_FPM_REQUIRE_GROUP of its own.
    port = free_ports(1)[0]
    conf = Path(run_dir) / "tmp" / "auth-pool.toml"
    conf.write_text(f'''
[server]
error-log = "-"

[pools.guarded]
app = "{APPS / 'auth_echo.py'}"
listen = ["fastcgi://{HOST}:{port}"]
processes = 1
threads = 2
auth-script = "{APPS / 'auth_script.py'}"
auth-realm = "toml realm"
auth-require-group = "wheel, admins"
auth-mount = "/_check"
access-script = "{APPS / 'access_script.py'}"
''')
    log = Path(run_dir) / "wsgi-fpm" / "auth-toml.log"
    log.parent.mkdir(exist_ok=True)
    addr = (HOST, port)
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(wsgi_fpm_bin()), "--allow-root", "--config", str(conf)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        r = answer_when_up(proc, log, lambda: fcgi_authorizer(
            addr, apache_params("AUTHENTICATOR", "alice", PASSWORDS["alice"])))
        assert (r.status, r.header("Variable-REMOTE_USER")) == (200, "alice"), r
        r = fcgi_authorizer(addr, apache_params("AUTHENTICATOR", "bob", PASSWORDS["bob"]))
        assert r.status == 401, r
        assert r.header("WWW-Authenticate") == 'Basic realm="toml realm", charset="UTF-8"', r.headers
        # The front end's requirement replaces the pool's.
        r = fcgi_authorizer(addr, apache_params("AUTHENTICATOR", "bob", PASSWORDS["bob"],
                                                extra=[("WSGI_FPM_REQUIRE_GROUP", "staff")]))
        assert r.status == 200, r
        r = wire.fcgi_request(addr, nginx_auth_params("/p", "/_check", headers=creds("bob")))
        assert r.status == 403, r
        r = wire.fcgi_request(addr, nginx_auth_params("/p", "/_check", headers=creds("alice")))
        assert (r.status, r.header("X-Remote-User")) == (200, "alice"), r
        r = wire.request("fastcgi", addr, path="/app", headers=[("X-Block-Hosts", "127.0.0.1")])
        assert r.status == 403, r
        assert wire.request("fastcgi", addr, path="/app").status == 200
    finally:
        proc.terminate()
        proc.wait(15)


def test_passwords_never_appear_in_the_logs(instances, apache, nginx, lighttpd):
    # Right, wrong and raising logins through every front end, then grep
    # every auth wsgi-fpm's log (error and access log) for any password.
    main = instances["main"]
    before = main.log_text().count("UserDatabaseDown")
    for user in ("alice", "boom", "carol"):
        get(apache, "/authn/x", creds(user))
        get(apache, "/authnz/x", creds(user))
        get(nginx["main"], "/private/x", creds(user))
        get(lighttpd["main"], "/files/secret.txt", creds(user))
    get(apache, "/authn/x", creds("bob", WRONG))
    get(nginx["main"], "/private/x", creds("bob", WRONG))
    get(lighttpd["main"], "/app/x", creds("bob", WRONG))
    # The four boom logins are logged: the log has caught up.
    wait_for(lambda: main.log_text().count("UserDatabaseDown") >= before + 4,
             what="the exceptions of the boom logins in %s" % main.log)
    secrets = list(PASSWORDS.values()) + [WRONG]
    for u in list(PASSWORDS) + ["zed"]:
        for p in (PASSWORDS.get(u), WRONG):
            if p:
                secrets.append(base64.b64encode(("%s:%s" % (u, p)).encode()).decode())
    for b in instances.values():
        text = b.log_text()
        leaked = [s for s in secrets if s in text]
        assert not leaked, "%s found in %s" % (leaked, b.log)
