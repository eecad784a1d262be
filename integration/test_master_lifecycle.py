"""The master's lifecycle options and signals (SPEC §4; issue: master process
and preforked pools), observed from outside as a user would: worker pids,
log files, the master's exit and CPU time.

--reload-on-change, SIGUSR1 log reopening, back-off for an application that
no longer imports, --max-rss, --inactivity-timeout, --startup-timeout,
--pid-file, SIGQUIT and SIGINT, --import-script, and signal.signal() from the
application.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import harness
from harness import APPS, tail, wait_for

PROBE = APPS / "lifecycle_probe.py"
IMPORT_SCRIPT = APPS / "import_script_probe.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ helpers

def workers(b):
    return sorted(b.proc.descendants())



def get(b, path, **kw):
    kw.setdefault("timeout", 10)
    return b.request("fastcgi", path=path, **kw)


def pid_answer(b, timeout=5):
    """The pid of the worker that answers /pid, or None if none answers."""
    try:
        r = get(b, "/pid", timeout=timeout)
    except (OSError, ValueError):
        return None
    return int(r.body) if r.status == 200 else None


def exited_within(b, seconds):
    try:
        b.proc.popen.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid):
    """utime + stime of pid and of its children it has waited for."""
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


@pytest.fixture
def launch(run_dir):
    """launch(name, app, *args, ready=True, env=None, error_log="-") → a
    wsgi-fpm started through the harness, not waited for when ready=False;
    stopped after the test."""
    started = []

    def _launch(name, app, *args, ready=True, env=None, error_log="-"):
        b = harness.WsgiFpm(run_dir, name, app, args, protocols=("fastcgi",), env=env,
                            error_log=error_log)
        started.append(b)
        if ready:
            b.wait_ready()
        return b

    yield _launch
    for b in started:
        b.stop()


@pytest.fixture
def scratch(run_dir, request):
    """An empty directory of this test's own under the run's tmp/."""
    name = re.sub(r"[^\w.-]", "-", request.node.name)
    d = Path(run_dir) / "tmp" / ("lifecycle-" + name)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def rewrite(path, text, bump=10):
    """New content and a clearly different mtime (the next import must not
    trust a cached .pyc, nor a watcher miss a change within the same second)."""
    before = path.stat().st_mtime if path.exists() else time.time()
    path.write_text(text)
    t = max(time.time(), before) + bump
    os.utime(path, (t, t))


# ------------------------------------------------------------------ 1. --reload-on-change

def test_reload_on_change_restarts_workers_when_an_imported_module_changes(launch, scratch):
    helper = scratch / "probe_helper_roc.py"
    helper.write_text('VALUE = "first"\n')
    b = launch("reload-on-change", PROBE, "--processes", "2", "--threads", "2", "--reload-on-change",
               "--python-path", scratch, env={"PROBE_HELPER": "probe_helper_roc"})
    old = set(wait_for(lambda: len(workers(b)) == 2 and workers(b), what="2 workers"))
    assert get(b, "/helper").body.split()[0] == b"first"
    # Nothing changed: nothing restarts (the watcher looks once a second).
    time.sleep(2.2)
    assert set(workers(b)) == old, "workers restarted although no module changed"

    rewrite(helper, 'VALUE = "second, rewritten"\n')
    changed_at = time.monotonic()
    wait_for(lambda: not (set(workers(b)) & old), timeout=12,
             what="both workers to be replaced after the helper module changed")
    body = get(b, "/helper").body.decode()
    value, pid = body.rsplit(" ", 1)
    assert value == "second, rewritten", body
    assert int(pid) not in old
    assert "(reload-on-change)" in b.log_text()
    assert "%s changed" % helper in b.log_text(), "the log should name the file that changed"
    took = time.monotonic() - changed_at
    # And the new workers settle: the fresh watchers do not see a change.
    settled = set(workers(b))
    assert len(settled) == 2
    time.sleep(2.2)
    assert set(workers(b)) == settled, "the workers kept restarting after the change (%.1f s)" % took


# ------------------------------------------------------------------ 2. SIGUSR1

def test_sigusr1_reopens_the_error_and_access_logs(launch, scratch):
    error_log, access_log = scratch / "error.log", scratch / "access.log"
    b = launch("usr1", PROBE, "--processes", "1", "--threads", "2", "--access-log", access_log,
               error_log=error_log)
    pid = int(get(b, "/errors", query="m=before-rotation").body)
    wait_for(lambda: "before-rotation" in error_log.read_text(), timeout=5, what="wsgi.errors in the error log")
    wait_for(lambda: "/errors?m=before-rotation" in access_log.read_text(), timeout=5,
             what="the access line")

    # logrotate's way: rename, then tell the server.
    error_log.rename(scratch / "error.log.1")
    access_log.rename(scratch / "access.log.1")
    os.kill(b.pid, signal.SIGUSR1)
    n = [0]

    def new_error_log_has_the_marker():
        n[0] += 1
        assert int(get(b, "/errors", query="m=after-rotation-%d" % n[0]).body) == pid, \
            "SIGUSR1 must reopen the logs, not replace the worker"
        return error_log.exists() and ("after-rotation-%d" % n[0]) in error_log.read_text()

    wait_for(new_error_log_has_the_marker, timeout=10, every=0.2,
             what="a new %s with the worker's wsgi.errors line" % error_log)
    wait_for(lambda: access_log.exists() and "/errors?m=after-rotation-%d " % n[0] in access_log.read_text(),
             timeout=5, what="a new %s with the request's access line" % access_log)
    # The master reopened its own too: what it logs now lands in the new file.
    os.kill(b.pid, signal.SIGTTIN)
    wait_for(lambda: "SIGTTIN" in error_log.read_text(), timeout=5,
             what="the master's next line (SIGTTIN) in the new error log")
    old_error = (scratch / "error.log.1").read_text()
    assert "after-rotation-%d" % n[0] not in old_error and "SIGTTIN" not in old_error
    # Requests sent before the worker got the signal may be in the old file;
    # the one that showed the new file may not.
    assert "after-rotation-%d " % n[0] not in (scratch / "access.log.1").read_text()


# ------------------------------------------------------------------ 3. back-off

BROKEN = "raise RuntimeError('probe app broken on purpose')\n"


def test_an_app_that_no_longer_imports_is_retried_with_growing_backoff_and_low_cpu(launch, scratch):
    app = scratch / "probe_app.py"
    shutil.copy(PROBE, app)
    b = launch("backoff", app, "--processes", "1", "--threads", "2")
    first = pid_answer(b)
    # The script breaks: its new generation fails, the old one keeps serving.
    rewrite(app, BROKEN)
    wait_for(lambda: "reload abandoned" in b.log_text(), timeout=10, what="the failed reload to be abandoned")
    assert pid_answer(b) == first

    # Now the serving worker dies: every replacement fails at import.
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not alive(first), timeout=5, what="the worker to die")
    cpu_before, t0 = cpu_seconds(b.pid), time.monotonic()
    starts_before = b.log_text().count("probe app broken on purpose")
    time.sleep(6)  # the measurement window, not a wait for an event
    cpu = cpu_seconds(b.pid) - cpu_before
    window = time.monotonic() - t0
    log = b.log_text()
    failed_starts = log.count("probe app broken on purpose") - starts_before
    assert b.proc.alive(), "the master must keep running: %s" % tail(b.log)
    assert 1 <= failed_starts <= 5, "%d failed starts in %.1f s: want a few, with back-off" % (failed_starts, window)
    # Master plus the workers it reaped: a busy loop would burn a core.
    assert cpu < 0.4 * window, "%.2f s of CPU in %.1f s" % (cpu, window)
    delays = [int(s) for s in re.findall(r"worker exited \(exit code \d+\) after [\d.]+s; replacing it in (\d+)s", log)]
    assert len(delays) >= 2 and delays == sorted(delays) and delays[-1] > delays[0], \
        "the back-off should grow: %s\n%s" % (delays, tail(b.log, 15))
    assert "cannot load the application" in log, "the log line should give the reason"

    # Fixed: the next start serves the new code.
    rewrite(app, PROBE.read_text().replace('VERSION = "one"', 'VERSION = "fixed"'))
    wait_for(lambda: _body_or_none(b, "/") == b"fixed", timeout=12, every=0.2,
             what="the fixed application to serve")


def _body_or_none(b, path):
    try:
        r = get(b, path, timeout=3)
    except (OSError, ValueError):
        return None
    return r.body if r.status == 200 else None


# ------------------------------------------------------------------ 4. --max-rss

def test_max_rss_replaces_a_worker_gracefully_after_the_request_that_grew_it(launch):
    b = launch("max-rss", PROBE, "--processes", "1", "--threads", "2", "--max-rss", "64")
    first = pid_answer(b)
    time.sleep(1.5)
    assert pid_answer(b) == first, "a worker below --max-rss must not be replaced"
    r = get(b, "/alloc", query="mb=100")
    assert r.status == 200 and int(r.body) == first, "the request that allocated must succeed"
    new = wait_for(lambda: (p := pid_answer(b)) != first and p, timeout=10,
                   what="a replacement for the worker above --max-rss")
    assert new != first
    wait_for(lambda: not alive(first), timeout=10, what="the big worker to exit")
    assert "(max-rss)" in b.log_text()


# ------------------------------------------------------------------ 5. --inactivity-timeout

def test_inactivity_timeout_replaces_an_idle_worker(launch):
    b = launch("idle", PROBE, "--processes", "1", "--threads", "2", "--inactivity-timeout", "2")
    first = pid_answer(b)
    last_request = time.monotonic()
    # Watch from outside: a request would reset the worker's idle time.
    wait_for(lambda: first not in workers(b), timeout=10, what="the idle worker to be replaced")
    idle = time.monotonic() - last_request
    assert idle >= 1.8, "replaced after %.1f s, before its 2 s of inactivity" % idle
    assert "(inactivity-timeout)" in b.log_text()
    assert pid_answer(b) not in (None, first)


def test_inactivity_timeout_keeps_a_worker_that_gets_requests(launch):
    b = launch("busy", PROBE, "--processes", "1", "--threads", "2", "--inactivity-timeout", "2")
    first = pid_answer(b)
    seen = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen.add(pid_answer(b))
        assert workers(b) == [first], "the busy worker was replaced: %s" % workers(b)
        time.sleep(0.3)
    assert seen == {first}
    assert "(inactivity-timeout)" not in b.log_text()


# ------------------------------------------------------------------ 6. --startup-timeout

def test_startup_timeout_kills_a_slow_replacement_and_starts_another(launch, scratch):
    flag = scratch / "slow"
    b = launch("startup", PROBE, "--processes", "1", "--threads", "2", "--startup-timeout", "2",
               env={"PROBE_SLOW_FLAG": str(flag)})
    first = pid_answer(b)
    flag.write_text("30")  # the next import sleeps 30 s (once)
    os.kill(first, signal.SIGKILL)
    slow = wait_for(lambda: [p for p in workers(b) if p != first and alive(p)], timeout=10,
                    what="the slow replacement to start")[0]
    wait_for(lambda: "within the startup timeout" in b.log_text(), timeout=8,
             what="the startup timeout to be logged")
    wait_for(lambda: not alive(slow), timeout=5, what="the slow worker to be killed")
    assert not flag.exists(), "the slow worker did not read its flag"
    new = wait_for(lambda: pid_answer(b), timeout=12, what="a worker that loads in time")
    assert new not in (first, slow)
    assert b.proc.alive()


def test_startup_timeout_at_first_start_replaces_the_worker(launch, scratch):
    flag = scratch / "slow"
    flag.write_text("30")
    b = launch("startup-first", PROBE, "--processes", "1", "--threads", "2", "--startup-timeout", "2",
               ready=False, env={"PROBE_SLOW_FLAG": str(flag)})
    wait_for(lambda: "within the startup timeout" in b.log_text() or not b.proc.alive(), timeout=10,
             what="the startup timeout to be logged")
    assert "within the startup timeout" in b.log_text()
    # SPEC §4: "a worker whose application has not loaded within S is replaced, with back-off".
    r = harness.answer_when_up(b.proc.popen, b.log, lambda: get(b, "/pid", timeout=3), timeout=10)
    assert r.status == 200
    assert b.proc.alive()


# ------------------------------------------------------------------ 7, 8. --pid-file, SIGQUIT, SIGINT

def test_pid_file_holds_the_master_pid_and_is_removed_on_sigterm(launch, scratch):
    pid_file = scratch / "wsgi-fpm.pid"
    b = launch("pid-file", PROBE, "--pid-file", pid_file)
    assert pid_file.read_text().strip() == str(b.pid)
    os.kill(b.pid, signal.SIGTERM)
    assert exited_within(b, 10), "SIGTERM did not stop the master"
    assert b.proc.popen.returncode == 0
    assert not pid_file.exists(), "a stopped master leaves no stale pid file"


def _slow_request(b, seconds, result):
    started = time.monotonic()
    try:
        result["r"] = get(b, "/sleep", query="s=%s" % seconds, timeout=30)
    except (OSError, ValueError) as e:
        result["error"] = e
    result["took"] = time.monotonic() - started


def test_sigquit_stops_gracefully_letting_a_request_in_flight_finish(launch, scratch):
    pid_file = scratch / "wsgi-fpm.pid"
    b = launch("quit", PROBE, "--processes", "1", "--shutdown-timeout", "10", "--pid-file", pid_file)
    pids = workers(b)
    result = {}
    t = threading.Thread(target=_slow_request, args=(b, 2, result))
    t.start()
    time.sleep(0.5)  # let the request reach the worker
    os.kill(b.pid, signal.SIGQUIT)
    t.join(20)
    assert "r" in result and result["r"].status == 200 and result["r"].body == b"slept", result
    assert exited_within(b, 10), "SIGQUIT did not stop the master"
    assert b.proc.popen.returncode == 0
    assert not any(alive(p) for p in pids)
    assert not pid_file.exists()


def test_sigint_stops_at_once_even_with_a_slow_request_in_flight(launch, scratch):
    pid_file = scratch / "wsgi-fpm.pid"
    b = launch("int", PROBE, "--processes", "1", "--shutdown-timeout", "20", "--pid-file", pid_file)
    pids = workers(b)
    result = {}
    t = threading.Thread(target=_slow_request, args=(b, 15, result))
    t.start()
    time.sleep(0.5)
    sent = time.monotonic()
    os.kill(b.pid, signal.SIGINT)
    assert exited_within(b, 5), "SIGINT did not stop the master"
    took = time.monotonic() - sent
    assert took < 2.5, "SIGINT took %.1f s: a fast stop does not wait for requests" % took
    t.join(20)
    assert "r" not in result or result["r"].body != b"slept", result
    assert result["took"] < 5, result
    wait_for(lambda: not any(alive(p) for p in pids), timeout=3, what="the workers to be gone")
    assert not pid_file.exists()


# ------------------------------------------------------------------ 9. --import-script

def test_import_script_runs_in_each_worker_before_the_first_request(launch, scratch):
    record = scratch / "imported"
    b = launch("import-script", PROBE, "--processes", "2", "--threads", "2", "--import-script", IMPORT_SCRIPT,
               env={"PROBE_IMPORT_LOG": str(record)})
    pids = wait_for(lambda: len(workers(b)) == 2 and workers(b), what="2 workers")
    # Each worker ran it at start, whether or not a request reached it yet.
    wait_for(lambda: record.exists() and sorted(map(int, record.read_text().split())) == pids,
             timeout=10, what="one run of the import script per worker, in %s" % record)
    got = json.loads(get(b, "/imported").body)
    assert got["script_pid"] == got["pid"] and got["pid"] in pids, got


# ------------------------------------------------------------------ 10. signal.signal() from the app

def test_signal_handlers_from_the_app_are_refused_with_a_warning(launch, scratch):
    marker = scratch / "handler-ran"
    b = launch("signals", PROBE, "--processes", "1", "--threads", "2",
               env={"PROBE_GRAB_SIGNALS": str(marker)})
    worker = workers(b)[0]
    log = b.log_text()
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        assert re.search(r"signal\.signal\(\S*%s\b.*ignored" % name, log), \
            "no warning for the app's signal.signal(%s):\n%s" % (name, tail(b.log))
    assert json.loads(get(b, "/handlers").body) == {"SIGTERM": False, "SIGINT": False, "SIGHUP": False}
    assert get(b, "/signal").body == b"returned"
    os.kill(b.pid, signal.SIGTERM)
    assert exited_within(b, 10), "the worker did not stop on SIGTERM"
    assert b.proc.popen.returncode == 0, tail(b.log)
    assert not alive(worker)
    assert not marker.exists(), marker.read_text()
    assert "did not stop in time" not in b.log_text()


# ------------------------------------------------------------------ 11. a broken pool beside a good one

def _two_pools(scratch, good_port, broken_port, broken_app):
    conf = scratch / "two-pools.toml"
    conf.write_text('[pools.good]\napp = "%s"\nlisten = ["fastcgi://127.0.0.1:%d"]\nprocesses = 1\nthreads = 2\n'
                    '[pools.broken]\napp = "%s"\nlisten = ["fastcgi://127.0.0.1:%d"]\nprocesses = 1\nthreads = 2\n'
                    % (PROBE, good_port, broken_app, broken_port))
    return conf


def _start(run_dir, name, *args):
    log = Path(run_dir) / "wsgi-fpm" / (name + ".log")
    log.parent.mkdir(exist_ok=True)
    cmd = [str(harness.wsgi_fpm_bin()), "--allow-root", *map(str, args)]
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True), log


def _answer(port, path="/"):
    try:
        r = harness.wire.request("fastcgi", ("127.0.0.1", port), path=path, timeout=3)
    except (OSError, ValueError):
        return None
    return r.body if r.status == 200 else None


def test_a_pool_that_cannot_import_is_retried_while_the_others_serve_and_serves_once_fixed(run_dir, scratch):
    good_port, broken_port = harness.free_ports(2)
    broken = scratch / "broken_app.py"
    broken.write_text(BROKEN)
    proc, log = _start(run_dir, "broken-pool", "--config", _two_pools(scratch, good_port, broken_port, broken))
    try:
        assert harness.answer_when_up(proc, log, lambda: harness.wire.request(
            "fastcgi", ("127.0.0.1", good_port), path="/", timeout=3)).body == b"one"
        wait_for(lambda: log.read_text().count("probe app broken on purpose") >= 2, timeout=15,
                 what="the broken pool retried")
        assert proc.poll() is None, "the master must keep running: %s" % tail(log)
        assert _answer(good_port) == b"one"
        assert _answer(broken_port) is None
        # Fixed: touching the script restarts the pool at once, back-off or not.
        rewrite(broken, PROBE.read_text().replace('VERSION = "one"', 'VERSION = "fixed"'))
        fixed_at = time.monotonic()
        wait_for(lambda: _answer(broken_port) == b"fixed", timeout=10, every=0.1,
                 what="the fixed pool to serve")
        took = time.monotonic() - fixed_at
        assert took < 3, "the fixed pool served only after %.1f s" % took
        assert _answer(good_port) == b"one"
    finally:
        proc.terminate()
        proc.wait(15)


def test_with_need_app_a_pool_that_cannot_import_stops_the_master_with_its_traceback(run_dir, scratch):
    good_port, broken_port = harness.free_ports(2)
    broken = scratch / "broken_app.py"
    broken.write_text(BROKEN)
    proc, log = _start(run_dir, "need-app", "--need-app", "--config",
                       _two_pools(scratch, good_port, broken_port, broken))
    try:
        assert proc.wait(20) == 1, tail(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" in text and "probe app broken on purpose" in text, text
    assert "the application could not be loaded" in text and "--need-app" in text, text


# ------------------------------------------------------------------ 12. --rss-samples

def test_max_rss_ignores_a_short_spike_and_recycles_sustained_growth_without_failing_a_request(launch):
    b = launch("rss-samples", PROBE, "--processes", "1", "--threads", "4", "--max-rss", "64",
               "--rss-samples", "3")
    first = pid_answer(b)
    failures, done = [], threading.Event()

    def load():
        while not done.is_set():
            try:
                r = get(b, "/pid", timeout=10)
                if r.status != 200:
                    failures.append(r.status)
            except (OSError, ValueError) as e:
                failures.append(repr(e))
            time.sleep(0.05)

    t = threading.Thread(target=load)
    t.start()
    try:
        # A spike of 1.2 s: one or two readings above the limit, not three.
        assert int(get(b, "/spike", query="mb=100&s=1.2").body) == first
        wait_for(lambda: "above max-rss 64 MB (reading 1 of 3)" in b.log_text(), timeout=5,
                 what="the spike to be seen")
        time.sleep(4)
        assert pid_answer(b) == first, "a single spike recycled the worker"
        assert "(max-rss)" not in b.log_text()
        # Sustained growth: three readings in a row, then a graceful replacement.
        assert int(get(b, "/alloc", query="mb=100").body) == first
        wait_for(lambda: (p := pid_answer(b)) not in (None, first) and p, timeout=15,
                 what="the worker replaced after three readings above the limit")
        assert "above max-rss 64 MB on 3 consecutive readings" in b.log_text()
        assert "(max-rss)" in b.log_text()
    finally:
        done.set()
        t.join(30)
    assert not failures, failures[:5]
