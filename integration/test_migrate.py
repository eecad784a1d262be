"""`wsgi-fpm migrate` end to end.

- The command: exit status 0 when written (also with unmapped options, which
  it prints as SOURCE:LINE: OPTION: not mapped: reason), 1 for input it cannot
  read or recognise, 2 for usage mistakes.
- Every fixture of tests/migrate/, its paths and users replaced by ones that
  exist here, migrates to a wsgi-fpm.toml that `wsgi-fpm --config … --check`
  accepts, and to a frontend.conf that `apache2 -t` or `nginx -t` accepts.
- A mod_wsgi setup and a uWSGI setup answer the same before and after the
  migration: Apache with mod_wsgi, then Apache with the generated ProxyPass
  in front of wsgi-fpm; uWSGI behind nginx's uwsgi_pass, then wsgi-fpm on
  the same socket behind the same nginx. The answers compared are the
  status, the body and the environ keys an application relies on
  (SCRIPT_NAME, PATH_INFO, QUERY_STRING, REQUEST_METHOD, wsgi.url_scheme).
  Where mod_wsgi or uWSGI is not installed, "before" is the answer the WSGI
  contract requires, written down here.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

import client
import harness
from harness import CONF, HOST, ROOT, Proc, free_port_run, free_ports, tail, wait_port, wsgi_fpm_bin

FIXTURES = ROOT / "tests" / "migrate"
APPS = ROOT / "tests" / "apps"
MOD_WSGI_SO = Path("/usr/lib/apache2/modules/mod_wsgi.so")


def migrate(*args, timeout=30):
    return subprocess.run([str(wsgi_fpm_bin()), "migrate", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def check(toml):
    # `--check` runs each pool's interpreter as the pool's user (nobody in
    # these fixtures): a bare `python3.11` must resolve to Debian's, which
    # nobody can run, not pyenv's under root's home.
    env = dict(os.environ, PATH="/usr/bin:" + os.environ.get("PATH", ""))
    return subprocess.run([str(wsgi_fpm_bin()), "--allow-root", "--config", str(toml), "--check"],
                          capture_output=True, text=True, timeout=60, env=env)


def world_readable_dir(prefix):
    """A temp dir the front ends' and mod_wsgi's `nobody` can read (the
    checkout may sit under a 0700 home)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def place(request):
    d = world_readable_dir("wsgi-fpm-migrate-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ the command

def test_a_usage_mistake_exits_2(place):
    r = migrate(FIXTURES / "uwsgi" / "django.ini")
    assert r.returncode == 2, r
    assert "--out" in r.stderr, r.stderr
    r = migrate(FIXTURES / "uwsgi" / "django.ini", "--out", place, "--from", "tomcat")
    assert r.returncode == 2, r


def test_a_source_it_cannot_read_exits_1_naming_it(place):
    r = migrate(place / "nonexistent.conf", "--out", place / "out")
    assert r.returncode == 1, r
    assert "nonexistent.conf: cannot read" in r.stderr, r.stderr
    assert not (place / "out").exists()


def test_a_binary_or_unrecognised_source_exits_1_with_a_clear_message(place):
    (place / "blob").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    r = migrate(place / "blob", "--out", place / "out")
    assert r.returncode == 1, r
    assert "a NUL byte" in r.stderr and "Traceback" not in r.stderr and "panicked" not in r.stderr, r.stderr
    (place / "notes.txt").write_text("shopping list\n- eggs\n")
    r = migrate(place / "notes.txt", "--out", place / "out")
    assert r.returncode == 1, r
    assert "not recognised" in r.stderr and "--from" in r.stderr, r.stderr
    (place / "bad.json").write_text('{"applications": {"a": {"type": "python",}}')
    r = migrate(place / "bad.json", "--out", place / "out")
    assert r.returncode == 1, r
    assert "bad.json:1: not valid JSON" in r.stderr, r.stderr


def test_unmapped_options_are_printed_and_kept_as_comments_and_the_exit_is_0(place):
    r = migrate(FIXTURES / "uwsgi" / "django.ini", "--out", place)
    assert r.returncode == 0, r
    # SOURCE:LINE: OPTION: not mapped: reason, SOURCE as given.
    expected = "%s:17: daemonize: not mapped: " % (FIXTURES / "uwsgi" / "django.ini")
    assert any(l.startswith(expected) for l in r.stderr.splitlines()), r.stderr
    toml = (place / "wsgi-fpm.toml").read_text()
    assert "daemonize: not mapped:" in toml
    # harakiri maps to request-timeout, which wsgi-fpm supports.
    assert "harakiri: not mapped:" not in toml
    assert re.search(r"^request-timeout = 20\b", toml, re.M), toml
    assert (place / "frontend.conf").exists()


# ------------------------------------------------------------------ --check and -t

def fake_venv(place):
    """A directory with bin/python: what `--check` asks of a python-home."""
    venv = place / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    py = venv / "bin" / "python"
    if not py.exists():
        # `--check` runs a pool's interpreter as the pool's user (nobody
        # here): Debian's python3.11 is one nobody can run; pyenv's, under
        # root's home, is not.
        debian = Path("/usr/bin/python3.11")
        py.symlink_to(debian if debian.exists() else Path(sys.executable))
    return venv


def localized(fixture, place):
    """The fixture with its paths and accounts replaced by ones that exist
    here; returns the new file."""
    text = (FIXTURES / fixture).read_text()
    venv = fake_venv(place)
    home = place / "home"
    home.mkdir(exist_ok=True)
    app = FIXTURES / "app" / "echo.wsgi"
    logs = place / "logs"
    logs.mkdir(exist_ok=True)
    subs = [
        # the application scripts (auth, access and import scripts too:
        # script_files() points those at test scripts after migrating)
        (r"/[\w/.-]*\.wsgi\b", str(app)),
        (r"(?<=wsgi-file = )%dapp\.py", str(app)),
        # virtual environments first, then directories (a venv is inside one)
        (r"/usr/local/pythonenv|/srv/trac/venv|/path/to/virtual/env|/path/to/app/venv/", str(venv)),
        (r"/path/to/your/project|/srv/trac\b|/www/api/|/srv/%\(project\)", str(home)),
        # log files: wsgi-fpm opens error-log before it checks anything
        (r"/var/log/(uwsgi|unit)/", str(logs) + "/"),
        # accounts that exist on Debian
        (r"\buser=(site1|joe)\b", "user=nobody"),
        (r"\bgroup=(site1|joe)\b", "group=nogroup"),
        (r"^uid = 1000$", "uid = nobody"),
        (r"(?<=--uid=)1000", "nobody"),
        (r"^gid = 2000$", "gid = nogroup"),
        (r"(?<=--gid=)2000", "nogroup"),
        (r'"user": "www"', '"user": "nobody"'),
        (r'"group": "www"', '"group": "nogroup"'),
    ]
    for pattern, repl in subs:
        text = re.sub(pattern, lambda m: repl, text, flags=re.M)
    out = place / Path(fixture).name
    out.write_text(text)
    return out


def script_files(toml):
    """auth-script, access-script and import-script point at files that
    exist here (the fixtures name the documentation's)."""
    text = toml.read_text()
    for key, app in (("auth-script", "auth_script.py"), ("access-script", "access_script.py"),
                     ("import-script", "import_script_probe.py")):
        text = re.sub(r'^(%s = )"[^"]*"' % key, lambda m: '%s"%s"' % (m.group(1), APPS / app), text, flags=re.M)
    toml.write_text(text)


#: More than any fixture has pools (each listens on a port of its own).
PORTS_PER_FIXTURE = 16

FIXTURE_FILES = sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/*")
                       if p.suffix in (".conf", ".ini", ".cmdline", ".json"))


@pytest.mark.parametrize("fixture", FIXTURE_FILES)
def test_every_fixture_migrates_to_a_configuration_that_passes_check(fixture, place):
    source = localized(fixture, place)
    # The pools listen on base, base + 1, ...: all of them must be free.
    base = free_port_run(PORTS_PER_FIXTURE)
    out = place / "out"
    r = migrate(source, "--out", out, "--listen-base", "%s:%d" % (HOST, base))
    assert r.returncode == 0, r.stderr
    toml = out / "wsgi-fpm.toml"
    assert toml.read_text().count("[pools.") <= PORTS_PER_FIXTURE
    # The documentation's auth, access and import scripts do not exist here.
    script_files(toml)
    c = check(toml)
    assert c.returncode == 0, "%s\n%s" % (c.stderr, toml.read_text())
    assert "pool " in c.stdout, c.stdout


def frontend_syntax(kind, snippet, place):
    """Runs the front end's own configuration test on the snippet, inside
    the complete configuration of conf/<kind>/."""
    work = place / ("fe-" + kind)
    for sub in ("logs", "tmp", "sites", "htdocs"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    main = "nginx.conf" if kind == "nginx" else "httpd.conf"
    (work / main).write_text(harness.fill(CONF / kind / main, {"WORKDIR": work}))
    (work / "sites" / "migrated.conf").write_text(snippet)
    if kind == "nginx":
        cmd = [shutil.which("nginx") or "/usr/sbin/nginx", "-t", "-e", str(work / "logs" / "error.log"),
               "-p", str(work), "-c", str(work / main)]
    else:
        cmd = [shutil.which("apache2") or "/usr/sbin/apache2", "-t", "-d", str(work), "-f", str(work / main)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def uncomment_reference(snippet):
    """The reference block of a uWSGI frontend.conf, as a live config."""
    block = snippet.split("# --- reference ---\n", 1)[1].split("# --- end of reference ---", 1)[0]
    return "\n".join(l[4:] if l.startswith("#   ") else l for l in block.splitlines()) + "\n"


@pytest.mark.parametrize("fixture,frontend", [(f, k) for f in FIXTURE_FILES for k in ("nginx", "apache")])
def test_every_generated_front_end_passes_the_front_ends_own_test(fixture, frontend, place):
    if not (shutil.which(frontend if frontend == "nginx" else "apache2")
            or Path("/usr/sbin", frontend if frontend == "nginx" else "apache2").exists()):
        pytest.skip("%s is not installed (integration/test-all.sh installs it)" % frontend)
    out = place / "out"
    base = free_port_run(PORTS_PER_FIXTURE)
    r = migrate(localized(fixture, place), "--out", out, "--frontend", frontend,
                "--listen-base", "%s:%d" % (HOST, base))
    assert r.returncode == 0, r.stderr
    snippet = (out / "frontend.conf").read_text()
    if "--- reference ---" in snippet:
        snippet = uncomment_reference(snippet)
    t = frontend_syntax(frontend, snippet, place)
    assert t.returncode == 0, "%s\n%s\n%s" % (t.stdout, t.stderr, snippet)


# ------------------------------------------------------------------ same answers

REQUESTS = [
    ("GET", "/app/hello/world?x=1&y=%C3%A9", None),
    ("GET", "/app", None),
    ("GET", "/app/", None),
    ("POST", "/app/form?z=2", b"a=1&b=2"),
    ("GET", "/app/a%20b/c", None),
    ("HEAD", "/app/head", None),
    ("GET", "/app/missing", None),
]

#: What the WSGI contract makes every server answer (GREETING aside): the
#: "before" when mod_wsgi or uWSGI is not installed.
CONTRACT = {
    "/app/hello/world?x=1&y=%C3%A9": ("/app", "/hello/world", "x=1&y=%C3%A9", "GET", ""),
    "/app": ("/app", "", "", "GET", ""),
    "/app/": ("/app", "/", "", "GET", ""),
    "/app/form?z=2": ("/app", "/form", "z=2", "POST", "a=1&b=2"),
    "/app/a%20b/c": ("/app", "/a b/c", "", "GET", ""),
    "/app/missing": ("/app", "/missing", "", "GET", ""),
    "/app/secret/x": ("/app", "/secret/x", "", "GET", ""),
}


#: A location guarded by an auth script (tests/apps/auth_script.py: alice
#: is in admins, bob is not): (who, password) → the request's key.
AUTH_REQUESTS = [
    ("GET", "/app/secret/x", None, None),
    ("GET", "/app/secret/x", None, ("alice", "pw-alice-8c1d")),
    ("GET", "/app/secret/x", None, ("alice", "wrong")),
    ("GET", "/app/secret/x", None, ("bob", "pw-bob-4f2a")),
    ("GET", "/app/secret/x", None, ("nobody-such", "x")),
]


def ask(port, requests=None):
    """(status, JSON body or None) per request; a request may carry Basic
    credentials as a fourth item."""
    import base64
    answers = {}
    for method, path, body, *rest in requests or REQUESTS:
        who = rest[0] if rest else None
        headers = [("Content-Type", "application/x-www-form-urlencoded")] if body else []
        if who:
            token = base64.b64encode(("%s:%s" % who).encode()).decode()
            headers.append(("Authorization", "Basic " + token))
        r = client.request(port, method, path, headers=headers, body=body)
        is_json = (r.header("Content-Type") or "").startswith("application/json")
        seen = r.json() if method != "HEAD" and is_json else None
        answers[(method, path, who)] = (r.status, seen)
    return answers


def contract_answers(greeting, requests=None):
    out = {}
    for method, path, _, *rest in requests or REQUESTS:
        who = rest[0] if rest else None
        if method == "HEAD":
            out[(method, path, who)] = (200, None)
            continue
        if path.startswith("/app/secret") and who != ("alice", "pw-alice-8c1d"):
            # Apache's own 401 page: wrong password, unknown user, or a
            # user outside the group (Apache asks again rather than 403).
            out[(method, path, who)] = (401, None)
            continue
        script, info, query, meth, body = CONTRACT[path]
        out[(method, path, who)] = (404 if info == "/missing" else 200, {
            "SCRIPT_NAME": script, "PATH_INFO": info, "QUERY_STRING": query,
            "REQUEST_METHOD": meth, "wsgi.url_scheme": "http", "body": body, "GREETING": greeting,
            "server": "the WSGI contract"})
    return out


class Sites(harness.FrontEnd):
    """nginx or Apache serving the given site texts (generated snippets, or
    the configuration being migrated), each listening on its own port."""

    def __init__(self, run_dir, kind, sites, label):
        self._workdir(run_dir, kind, "%s-%s" % (kind, label))
        self.ports = {}
        for name, (text, port) in sites.items():
            self.ports[name] = port
            (self.dir / "sites" / ("%s.conf" % name)).write_text(text)
        self._launch(run_dir)


def start_wsgi_fpm(run_dir, toml, name, port):
    log = Path(run_dir) / "wsgi-fpm" / ("%s.log" % name)
    proc = Proc(name, [wsgi_fpm_bin(), "--allow-root", "--config", toml], log, cwd=ROOT,
                pids_file=Path(run_dir) / "pids")
    if not wait_port(port, time.monotonic() + harness.BACKEND_START_TIMEOUT):
        proc.stop()
        raise AssertionError("wsgi-fpm did not listen on %d:\n%s" % (port, tail(log)))
    return proc


def app_copy(place):
    """The echo application where Apache's `nobody` can read it."""
    app = place / "echo.wsgi"
    shutil.copy(FIXTURES / "app" / "echo.wsgi", app)
    os.chmod(app, 0o644)
    return app


@pytest.mark.parametrize("frontend", ["apache", "nginx"])
def test_a_migrated_mod_wsgi_site_answers_as_before(frontend, run_dir, place):
    """Apache with mod_wsgi, then wsgi-fpm behind the generated Apache (or
    nginx) configuration. One difference is by design: nginx's auth_request
    gets wsgi-fpm's 403 for a user outside the required group, where Apache
    asks again with 401."""
    app = app_copy(place)
    auth = place / "auth.py"
    shutil.copy(APPS / "auth_script.py", auth)
    os.chmod(auth, 0o644)
    front, backend = free_ports(2)
    source = place / "site.conf"
    source.write_text(
        "<VirtualHost {h}:{p}>\n"
        "    ServerName localhost\n"
        "    WSGIDaemonProcess echo processes=2 threads=4 display-name=%{{GROUP}} \\\n"
        "        maximum-requests=1000 lang=C.UTF-8\n"
        "    WSGIProcessGroup echo\n"
        "    WSGIApplicationGroup %{{GLOBAL}}\n"
        "    WSGIScriptAlias /app {app}\n"
        "    <Directory {dir}>\n"
        "        Require all granted\n"
        "    </Directory>\n"
        "    <Location /app/secret>\n"
        "        AuthType Basic\n"
        "        AuthName \"Staff only\"\n"
        "        AuthBasicProvider wsgi\n"
        "        WSGIAuthUserScript {auth}\n"
        "        WSGIAuthGroupScript {auth}\n"
        "        Require wsgi-group admins\n"
        "    </Location>\n"
        "</VirtualHost>\n".format(h=HOST, p=front, app=app, dir=place, auth=auth))
    requests = REQUESTS + AUTH_REQUESTS
    if MOD_WSGI_SO.exists():
        before_site = "LoadModule wsgi_module %s\nWSGISocketPrefix logs/wsgi\nListen %s:%d\n%s" % (
            MOD_WSGI_SO, HOST, front, source.read_text())
        fe = Sites(run_dir, "apache", {"before": (before_site, front)}, "mod-wsgi-before")
        try:
            before = harness.wait_for(lambda: _try_ask(front, requests), timeout=20,
                                      what="mod_wsgi's first answer")
        finally:
            fe.stop()
    else:
        warnings.warn("mod_wsgi is not installed (apt-get install libapache2-mod-wsgi-py3): "
                      "'before' is the answer the WSGI contract requires")
        before = contract_answers(None, requests)
    old_server = "mod_wsgi" if MOD_WSGI_SO.exists() else "the WSGI contract"

    out = place / "out"
    r = migrate(source, "--out", out, "--listen-base", "%s:%d" % (HOST, backend), "--frontend", frontend)
    assert r.returncode == 0, r.stderr
    toml = out / "wsgi-fpm.toml"
    assert 'app = "%s"' % app in toml.read_text()
    snippet = (out / "frontend.conf").read_text()
    if frontend == "apache":
        assert 'ProxyPass "/app" "fcgi://%s:%d/app" flushpackets=auto' % (HOST, backend) in snippet, snippet
        assert "AuthBasicProvider echo_authn" in snippet and "WSGI_FPM_REQUIRE_GROUP=admins" in snippet, snippet
        site = "Listen %s:%d\n%s" % (HOST, front, snippet)
    else:
        assert "listen %s:%d;" % (HOST, front) in snippet and "auth_request" in snippet, snippet
        site = snippet
        bob = ("GET", "/app/secret/x", ("bob", "pw-bob-4f2a"))
        assert before[bob][0] == 401
        before[bob] = (403, None)
    wsgi = start_wsgi_fpm(run_dir, toml, "migrated-mod-wsgi-" + frontend, backend)
    try:
        fe = Sites(run_dir, frontend, {"after": (site, front)}, "mod-wsgi-after")
        try:
            after = harness.wait_for(lambda: _try_ask(front, requests), timeout=20,
                                     what="wsgi-fpm's first answer")
        finally:
            fe.stop()
    finally:
        wsgi.stop()
    assert_same(before, after, old_server)


def _try_ask(port, requests):
    try:
        answers = ask(port, requests)
    except (OSError, ValueError):
        return None
    # Apache answers 503 until the daemon or backend is up.
    return answers if all(s != 503 for s, _ in answers.values()) else None


def servers(answers):
    """The servers that answered, taken out of the answers compared."""
    seen = set()
    for _, body in answers.values():
        if body is not None:
            seen.add(body.pop("server", None))
    return seen


def assert_same(before, after, old_server):
    assert servers(before) == {old_server}
    assert servers(after) == {"wsgi-fpm"}
    assert set(before) == set(after)
    for key in before:
        assert before[key] == after[key], "%s %s: before %r, after %r" % (key[0], key[1], before[key], after[key])


def uwsgi_binary():
    return shutil.which("uwsgi")


def test_a_migrated_uwsgi_app_answers_as_before_behind_the_same_nginx(run_dir, place):
    app = app_copy(place)
    sock = free_ports(1)[0]
    front = free_ports(1)[0]
    ini = place / "app.ini"
    ini.write_text(
        "[uwsgi]\n"
        "base = %d\n"
        "socket = {h}:{sock}\n"
        "mount = /app=%(base)echo.wsgi\n"
        "manage-script-name = true\n"
        "master = true\n"
        "processes = 2\n"
        "threads = 2\n"
        "env = GREETING=hello\n"
        "die-on-term = true\n"
        "vacuum = true\n".format(h=HOST, sock=sock))
    nginx_site = harness.fill(CONF / "nginx" / "uwsgi.conf", {
        "LISTEN_HOST": HOST, "LISTEN_PORT": front, "BACKEND_HOST": HOST, "BACKEND_PORT": sock, "MOUNT": "/app"})
    # nginx's `location /app/` does not take /app itself: leave it out.
    requests = [r for r in REQUESTS if r[1] != "/app"]
    fe = Sites(run_dir, "nginx", {"site": (nginx_site, front)}, "uwsgi")
    try:
        if uwsgi_binary():
            log = Path(run_dir) / "uwsgi.log"
            uw = Proc("uwsgi", [uwsgi_binary(), "--ini", ini], log, cwd=place, pids_file=Path(run_dir) / "pids")
            try:
                before = harness.wait_for(lambda: _try_ask_ok(front, requests), timeout=30,
                                          what="uWSGI's first answer")
            finally:
                uw.stop(sig=signal.SIGINT)
        else:
            warnings.warn("uWSGI is not installed (pip install uwsgi): "
                          "'before' is the answer the WSGI contract requires")
            before = contract_answers("hello", requests)
        old_server = "uWSGI" if uwsgi_binary() else "the WSGI contract"

        out = place / "out"
        r = migrate(ini, "--out", out)
        assert r.returncode == 0, r.stderr
        toml = (out / "wsgi-fpm.toml").read_text()
        assert 'listen = ["uwsgi://%s:%d"]' % (HOST, sock) in toml, toml
        assert 'mount = "/app"' in toml and "preload = true" in toml, toml
        assert "Nothing to change" in (out / "frontend.conf").read_text()
        wsgi = start_wsgi_fpm(run_dir, out / "wsgi-fpm.toml", "migrated-uwsgi", sock)
        try:
            after = harness.wait_for(lambda: _try_ask_ok(front, requests), timeout=30,
                                     what="wsgi-fpm's first answer")
        finally:
            wsgi.stop()
    finally:
        fe.stop()
    assert_same(before, after, old_server)


def _try_ask_ok(port, requests):
    """nginx answers 502 while nothing listens on the socket."""
    try:
        answers = ask(port, requests)
    except (OSError, ValueError):
        return None
    return answers if all(s not in (502, 503, 504) for s, _ in answers.values()) else None
