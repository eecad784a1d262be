"""Fixtures for the end-to-end tests.

- ``stack`` (session): wsgi-fpm instances for the application slots and the
  three front ends, each started on first use from the templates in conf/,
  all stopped at the end of the session (also after failures).
- ``fe``: one front end × protocol variant (the tests that take it run once
  per variant; ``@pytest.mark.frontends(...)`` narrows the list).
  ``fe.route(slot)`` gives the front-end port that leads to that slot's app.
- ``spawn``: an extra wsgi-fpm with its own arguments, stopped after the test.

Logs: integration/work/latest/ (wsgi-fpm/*.log, nginx/, apache/, lighttpd/).
"""
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import client  # noqa: E402
import harness  # noqa: E402
from harness import SLOT, VARIANT, VARIANTS  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "frontends(*names): run only on these front-end variants")


def pytest_generate_tests(metafunc):
    if "fe" in metafunc.fixturenames:
        names = [v.name for v in VARIANTS]
        marker = metafunc.definition.get_closest_marker("frontends")
        if marker:
            names = [n for n in names if n in marker.args]
        metafunc.parametrize("fe", names, indirect=True)
    if "protocol" in metafunc.fixturenames:
        metafunc.parametrize("protocol", ["fastcgi", "scgi", "uwsgi"])


def pytest_sessionstart(session):
    binary = harness.wsgi_fpm_bin()
    missing = [t for t in ("nginx", "apache2", "lighttpd") if not shutil.which(t)
               and not Path("/usr/sbin", t).exists()]
    print("\nwsgi-fpm under test: %s%s" % (binary, "" if binary.exists() else " (MISSING)"))
    if missing:
        print("front ends missing: %s (integration/test-all.sh installs them)" % ", ".join(missing))


class Route:
    """The front-end port of one variant that leads to one application slot."""

    def __init__(self, stack, variant, slot):
        self.stack = stack
        self.variant = variant
        self.slot = slot
        self.backend = stack.backend(slot.name)
        self.frontend = stack.frontend(variant.frontend)
        self.port = self.frontend.ports[(variant.name, slot.name)]

    @property
    def relay(self):
        return self.stack.relays.get((self.variant.name, self.slot.name))

    def request(self, method, path, **kw):
        return client.request(self.port, method, path, **kw)

    def get(self, path, **kw):
        return client.request(self.port, "GET", path, **kw)

    def __repr__(self):
        return "<Route %s → %s (port %d)>" % (self.variant.name, self.slot.name, self.port)


class FE:
    def __init__(self, stack, variant):
        self.stack = stack
        self.variant = variant
        self.name = variant.name
        self.frontend = variant.frontend
        self.protocol = variant.protocol
        self.keepconn = variant.keepconn
        self.chunked = variant.chunked

    def route(self, slot="main"):
        return Route(self.stack, self.variant, SLOT[slot])


@pytest.fixture(scope="session")
def run_dir():
    return harness.new_run_dir()


@pytest.fixture(scope="session")
def stack(run_dir):
    s = harness.Stack(run_dir)
    yield s
    s.stop()


@pytest.fixture
def fe(request, stack):
    return FE(stack, VARIANT[request.param])


@pytest.fixture
def spawn(stack):
    """spawn(name, app, *args, **kw) → a started WsgiFpm, stopped after the test."""
    started = []

    def _spawn(name, app, *args, **kw):
        b = stack.spawn(name, app, args, **kw)
        started.append(b)
        return b

    yield _spawn
    for b in started:
        b.stop()


@pytest.fixture(scope="module")
def spawn_module(stack):
    started = []

    def _spawn(name, app, *args, **kw):
        b = stack.spawn(name, app, args, **kw)
        started.append(b)
        return b

    yield _spawn
    for b in started:
        b.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    stack = item.funcargs.get("stack") or getattr(item, "_stack", None)
    fe = item.funcargs.get("fe")
    if fe is not None:
        stack = fe.stack
    if stack is None:
        return
    lines = ["run dir: %s" % stack.run_dir]
    if fe is not None and fe.frontend in stack.frontends:
        err = stack.frontends[fe.frontend].dir / "logs" / "error.log"
        lines += ["--- %s (last lines)" % err, harness.tail(err, 8)]
    rep.sections.append(("logs", "\n".join(lines)))


def pytest_terminal_summary(terminalreporter):
    latest = harness.WORK / "latest"
    if latest.exists():
        terminalreporter.write_line("logs of this run: %s" % os.path.realpath(latest))
