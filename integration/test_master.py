"""The master (SPEC §4 signals, issue: master process and preforked pools),
observed from outside: pids, signals, reloads, crashes."""
import os
import shutil
import signal
import threading
import time

import pytest

from harness import APPS, wait_for

LIFECYCLE = APPS / "lifecycle.py"


def workers(b):
    return sorted(b.proc.descendants())



def get(b, path, **kw):
    return b.request("fastcgi", path=path, **kw)


@pytest.fixture
def app_copy(run_dir, request):
    """A private copy of the lifecycle app, so a test may rewrite it."""
    path = run_dir / "tmp" / ("lifecycle-%s.py" % request.node.name.replace("[", "-").replace("]", ""))
    path.parent.mkdir(exist_ok=True)
    shutil.copy(LIFECYCLE, path)
    return path


def test_processes_gives_that_many_workers_each_with_its_threads(spawn):
    b = spawn("count", LIFECYCLE, "--processes", "3", "--threads", "4", protocols=("fastcgi",))
    pids = wait_for(lambda: len(workers(b)) == 3 and workers(b), what="3 workers")
    # A worker starts its Python threads once its application has loaded,
    # which may be after the first answer from its siblings.
    def thread_counts():
        return {pid: len(os.listdir("/proc/%d/task" % pid)) for pid in pids}

    try:
        wait_for(lambda: all(n >= 4 + 1 for n in thread_counts().values()), timeout=20)
    except AssertionError:
        raise AssertionError("want 4 Python threads + 1 in each worker, have %s" % thread_counts())
    assert sorted(workers(b)) == pids, "the workers changed while starting"


def test_a_crashed_worker_is_replaced(spawn):
    b = spawn("crash", LIFECYCLE, "--processes", "1", protocols=("fastcgi",))
    first = int(get(b, "/pid").body)
    for how in ("/exit", "/segv"):
        try:
            get(b, how, timeout=10)
        except OSError:
            pass  # the connection dies with the worker
        after = wait_for(lambda: _pid_answer(b), timeout=15, what="a replacement after " + how)
        assert after != first, how
        first = after
    assert "worker exited (killed by SIGSEGV)" in b.log_text()


def _pid_answer(b):
    try:
        r = get(b, "/pid", timeout=5)
    except OSError:
        return None
    return int(r.body) if r.status == 200 else None


def test_sighup_under_load_loses_no_request(spawn, app_copy):
    b = spawn("hup-load", app_copy, "--processes", "2", "--threads", "2", protocols=("fastcgi",))
    old = set(workers(b))
    failures, done = [], threading.Event()
    count = [0]

    def load():
        while not done.is_set():
            try:
                r = get(b, "/", timeout=10)
                if r.status != 200:
                    failures.append(r.status)
            except OSError as e:
                failures.append(repr(e))
            count[0] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        app_copy.write_text(app_copy.read_text().replace('VERSION = "one"', 'VERSION = "two"'))
        os.kill(b.pid, signal.SIGHUP)
        wait_for(lambda: get(b, "/").body == b"two", timeout=20, what="the new generation")
        time.sleep(0.5)
    finally:
        done.set()
        for t in threads:
            t.join(30)
    assert not failures, failures[:5]
    assert count[0] > 20
    wait_for(lambda: not (set(workers(b)) & old), what="the old generation to retire")


def test_sighup_with_a_broken_app_keeps_the_old_generation_serving(spawn, app_copy):
    b = spawn("hup-broken", app_copy, "--processes", "1", protocols=("fastcgi",))
    old = workers(b)
    app_copy.write_text("raise RuntimeError('broken on purpose')\n")
    os.kill(b.pid, signal.SIGHUP)
    # The reload reads the configuration off the master's loop; the touched
    # script may start (and abandon) a generation before it does.
    wait_for(lambda: "reload abandoned" in b.log_text().partition("SIGHUP: starting a new generation")[2],
             timeout=20, what="the reload to be abandoned")
    assert get(b, "/").body == b"one"
    # Only the old worker is left (the reload's short-lived probes are gone).
    wait_for(lambda: workers(b) == old, timeout=5, what="the old worker alone")
    assert "broken on purpose" in b.log_text()


def test_sigterm_lets_an_in_flight_request_finish(spawn):
    b = spawn("term", LIFECYCLE, "--processes", "1", "--shutdown-timeout", "10", protocols=("fastcgi",))
    result = {}
    t = threading.Thread(target=lambda: result.update(r=get(b, "/sleep", query="s=1.5", timeout=20)))
    t.start()
    time.sleep(0.5)
    os.kill(b.pid, signal.SIGTERM)
    t.join(20)
    assert result["r"].status == 200 and result["r"].body == b"slept"
    b.proc.popen.wait(15)
    assert b.proc.popen.returncode == 0


def test_sigkill_of_the_master_leaves_no_worker_behind(spawn):
    b = spawn("orphan", LIFECYCLE, "--processes", "2", protocols=("fastcgi",))
    pids = wait_for(lambda: len(workers(b)) == 2 and workers(b), what="2 workers")
    os.kill(b.pid, signal.SIGKILL)
    wait_for(lambda: not any(os.path.exists("/proc/%d" % p) and _not_zombie(p) for p in pids),
             timeout=10, what="the workers to exit")


def _not_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigttin_and_sigttou_grow_and_shrink_the_pool(spawn):
    b = spawn("ttin", LIFECYCLE, "--processes", "2", protocols=("fastcgi",))
    wait_for(lambda: len(workers(b)) == 2, what="2 workers")
    os.kill(b.pid, signal.SIGTTIN)
    wait_for(lambda: len(workers(b)) == 3, what="3 workers after SIGTTIN")
    os.kill(b.pid, signal.SIGTTOU)
    wait_for(lambda: len(workers(b)) == 2, what="2 workers after SIGTTOU")
    os.kill(b.pid, signal.SIGTTOU)
    wait_for(lambda: len(workers(b)) == 1, what="1 worker after another SIGTTOU")
    os.kill(b.pid, signal.SIGTTOU)
    time.sleep(1)
    assert len(workers(b)) == 1, "the last worker must stay"
    assert get(b, "/").status == 200


def test_workers_show_their_display_name(spawn):
    b = spawn("comm", LIFECYCLE, protocols=("fastcgi",))
    pid = wait_for(lambda: workers(b), what="a worker")[0]
    with open("/proc/%d/comm" % pid) as f:
        assert f.read().strip() == "wsgi-fpm:main"


def test_touching_the_script_serves_the_new_code(spawn, app_copy):
    b = spawn("touch", app_copy, "--processes", "2", protocols=("fastcgi",))
    assert get(b, "/").body == b"one"
    old = set(workers(b))
    app_copy.write_text(app_copy.read_text().replace('VERSION = "one"', 'VERSION = "touched"'))
    wait_for(lambda: get(b, "/").body == b"touched", timeout=10, what="the new code")
    wait_for(lambda: not (set(workers(b)) & old), what="the old workers to retire")
    # Nothing else changed: the master restarted nothing more.
    settled = set(workers(b))
    time.sleep(1.5)
    assert set(workers(b)) == settled


def _rewrite(path, old, new):
    """New content and a clearly later mtime (a .pyc of the same second
    must not be trusted)."""
    before = path.stat().st_mtime
    path.write_text(path.read_text().replace(old, new))
    t = max(time.time(), before) + 10
    os.utime(path, (t, t))


def test_the_very_next_request_after_touching_the_script_runs_the_new_code(spawn, app_copy):
    """Issue 10 item 18: the worker checks the script before it dispatches
    a request, so no request after the change gets the old code, not even
    one sent before the master's quarter-second poll notices it; the
    master then replaces the workers with a new generation."""
    b = spawn("touch-next", app_copy, "--processes", "1", "--threads", "2", protocols=("fastcgi",))
    assert get(b, "/").body == b"one"
    old = set(workers(b))
    _rewrite(app_copy, 'VERSION = "one"', 'VERSION = "two"')
    answers = [get(b, "/").body for _ in range(20)]
    assert answers == [b"two"] * 20, answers
    assert "changed: loaded it again before the next request" in b.log_text()
    wait_for(lambda: set(workers(b)) and not (set(workers(b)) & old), what="a new generation")
    assert get(b, "/").body == b"two"


def test_the_very_next_request_after_replacing_the_script_by_a_rename_runs_the_new_code(spawn, app_copy):
    """Deploy tools write a new file and rename it over the old one: the
    worker watches the file it opened, which then has no links left, so it
    looks at the path again before the next request."""
    b = spawn("replace-next", app_copy, "--processes", "1", "--threads", "2", protocols=("fastcgi",))
    assert get(b, "/").body == b"one"
    staged = app_copy.with_name(app_copy.name + ".new")
    staged.write_text(app_copy.read_text().replace('VERSION = "one"', 'VERSION = "renamed"'))
    t = max(time.time(), app_copy.stat().st_mtime) + 10
    os.utime(staged, (t, t))
    os.replace(staged, app_copy)
    answers = [get(b, "/").body for _ in range(20)]
    assert answers == [b"renamed"] * 20, answers
    assert "changed: loaded it again before the next request" in b.log_text()


def test_a_touched_script_that_no_longer_loads_keeps_the_loaded_code_serving(spawn, app_copy):
    b = spawn("touch-broken", app_copy, "--processes", "1", protocols=("fastcgi",))
    assert get(b, "/").body == b"one"
    _rewrite(app_copy, 'VERSION = "one"', 'VERSION = "broken" +')
    answers = [get(b, "/").body for _ in range(10)]
    assert answers == [b"one"] * 10, answers
    assert "changed but no longer loads; the code loaded before keeps serving" in b.log_text()
    assert "SyntaxError" in b.log_text()
    # Fixed again: served at once.
    _rewrite(app_copy, 'VERSION = "broken" +', 'VERSION = "three"')
    wait_for(lambda: get(b, "/").body == b"three", timeout=10, what="the fixed code")


def test_systemd_notify_says_ready_then_reloading_and_stopping(spawn, run_dir):
    import socket as _socket
    path = str(run_dir / "tmp" / "notify.sock")
    if os.path.exists(path):
        os.unlink(path)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    try:
        b = spawn("notify", LIFECYCLE, protocols=("fastcgi",), env={"NOTIFY_SOCKET": path})
        assert b"READY=1" in sock.recv(4096)
        os.kill(b.pid, signal.SIGHUP)
        assert sock.recv(4096) == b"RELOADING=1"
        assert sock.recv(4096).startswith(b"READY=1")
        os.kill(b.pid, signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        # The workers do not inherit the master's notify socket.
        assert "NOTIFY_SOCKET" not in get_env_of_a_worker_or_none(b)
    finally:
        sock.close()


def get_env_of_a_worker_or_none(b):
    for pid in workers(b):
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            pass
    return ""


@pytest.mark.parametrize("graceful,sleep,finishes", [("10", "1.5", True), ("1", "5", False)])
def test_graceful_timeout_bounds_requests_in_flight_on_reload(spawn, graceful, sleep, finishes):
    b = spawn("graceful-" + graceful, LIFECYCLE, "--processes", "1", "--graceful-timeout", graceful,
              "--shutdown-timeout", "30", protocols=("fastcgi",))
    result = {}

    def slow():
        started = time.monotonic()
        try:
            result["r"] = get(b, "/sleep", query="s=" + sleep, timeout=20)
        except (OSError, ValueError) as e:
            result["error"] = e
        result["took"] = time.monotonic() - started

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    os.kill(b.pid, signal.SIGHUP)
    t.join(25)
    if finishes:
        assert result.get("r") is not None and result["r"].body == b"slept", result
    else:
        assert "r" not in result or result["r"].status != 200, result
        assert result["took"] < 4, "cut after the graceful timeout, not the request's 5 s: %r" % result
    assert get(b, "/").status == 200
