"""The operations features seen from outside (SPEC §4, §8; docs/operations.md):
the watchdogs (--request-timeout, --deadlock-timeout, --slow-log-timeout),
SIGUSR2 stack dumps, the request queue (--max-queue, --queue-timeout, aborted
requests), --max-rss and the rlimits counted in the status, the status endpoint (/status,
/status?full, /metrics, `wsgi-fpm status`) and what reaches the error log
(--log-format json, the application's own output); and, behind nginx's
shipped FastCGI site, the 504 and 503 a browser would get.

Each test starts its own wsgi-fpm with `tests/apps/operations.py` and a
`--status` port, talks FastCGI to it directly and watches the client's
answers, the worker pids, the error log and the status endpoint. Expectations
come from SPEC.md.
"""
import hashlib
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

import client
import wire
from harness import APPS, HOST, SitesFrontEnd, free_ports, wait_for, wsgi_fpm_bin

OPS = APPS / "operations.py"
OPS_SOURCE = OPS.read_text().splitlines()

#: `--request-timeout` may fire up to a quarter of itself (at most 0.5 s)
#: late (the watchdog's tick); the client must have its 504 by then plus a
#: little.
TIMEOUT_ANSWER_BOUND = 3.5
#: SPEC §4: a thread still in its request this long after RequestTimeout was
#: raised gets its worker replaced.
GRACE = 5.0


def line_of(text, function):
    """`operations.py", line N, in FUNCTION` for the first line holding `text`
    after `def FUNCTION`: what a logged Python stack must show."""
    start = next(i for i, l in enumerate(OPS_SOURCE) if l.startswith("def %s(" % function))
    n = next(i for i in range(start, len(OPS_SOURCE)) if text in OPS_SOURCE[i]) + 1
    return 'operations.py", line %d, in %s' % (n, function)


SLEEP_FRAME = line_of("time.sleep(0.05)", "sleep_in_python")


# ------------------------------------------------------------------ helpers

class Ops:
    """One wsgi-fpm running operations.py, with its status port."""

    def __init__(self, backend, status_port, tmp, name):
        self.b = backend
        self.status_port = status_port
        self.tmp = Path(tmp)
        self.name = name
        self.pid = backend.pid

    def get(self, path, query="", headers=(), timeout=15):
        return self.b.request("fastcgi", path=path, query=query, headers=headers, timeout=timeout)

    def timed_get(self, path, query="", headers=(), timeout=15):
        """(response or the exception raised, seconds it took)."""
        t = time.monotonic()
        try:
            r = self.get(path, query, headers, timeout)
        except (OSError, ValueError) as e:
            r = e
        return r, time.monotonic() - t

    def worker_pid(self, timeout=5):
        r = self.get("/pid", timeout=timeout)
        assert r.status == 200, r
        return int(r.body)

    def http(self, path):
        return client.request(self.status_port, "GET", path, timeout=5)

    def status(self, query=""):
        r = self.http("/status" + query)
        assert r.status == 200, r
        return json.loads(r.body)

    def pool(self, query=""):
        return self.status(query)["pools"]["main"]

    def metrics(self):
        r = self.http("/metrics")
        assert r.status == 200, r
        return r.body.decode()

    def log(self):
        """The error log, without the harness's first line (the command)."""
        return "\n".join(l for l in self.b.log_text().splitlines() if not l.startswith("$ "))

    def mark(self, what):
        """A short name for the app's marker files, unique in this run (the
        status port is), short enough for the status table's URI column."""
        return "m%d-%s" % (self.status_port, what)

    def read_mark(self, mark, kind):
        path = self.tmp / ("%s.%s" % (mark, kind))
        return path.read_text() if path.exists() else None

    def calls(self):
        """The tags of the /work requests the application ran, in order."""
        path = self.tmp / ("calls-" + self.name)
        return path.read_text().split() if path.exists() else []


@pytest.fixture
def ops(spawn, run_dir, request):
    """ops(*args, processes=1, threads=1) → an Ops, stopped after the test."""
    count = [0]

    def start(*args, processes=1, threads=1, env=None, error_log="-"):
        count[0] += 1
        node = request.node.name
        name = "ops-%s-%s-%d" % (re.sub(r"[^\w.-]", "-", node)[:60],
                                 hashlib.sha1(node.encode()).hexdigest()[:6], count[0])
        port = free_ports(1)[0]
        full_env = {"CALLS": name}
        full_env.update(env or {})
        b = spawn(name, OPS, "--processes", processes, "--threads", threads,
                  "--status", "%s:%d" % (HOST, port), *args,
                  protocols=("fastcgi",), env=full_env, error_log=error_log)
        o = Ops(b, port, Path(run_dir) / "tmp", name)
        wait_for(lambda: _answers(o), timeout=10, what="the status endpoint")
        wait_for(lambda: [w["state"] for w in o.pool()["processes"]] == ["idle"] * int(processes),
                 timeout=10, what="%s workers ready" % processes)
        return o

    return start


def _answers(o):
    try:
        return o.http("/status").status == 200
    except OSError:
        return False


class Background:
    """Requests run on threads; each result is (response or exception,
    monotonic start, monotonic end)."""

    def __init__(self, o):
        self.o = o
        self.threads = []
        self.results = {}

    def start(self, key, path, query="", headers=(), timeout=30):
        def run():
            t = time.monotonic()
            try:
                r = self.o.get(path, query, headers, timeout)
            except (OSError, ValueError) as e:
                r = e
            self.results[key] = (r, t, time.monotonic())

        th = threading.Thread(target=run, name="bg-%s" % key, daemon=True)
        th.start()
        self.threads.append(th)
        return th

    def join(self, timeout=40):
        deadline = time.monotonic() + timeout
        for th in self.threads:
            th.join(max(0.1, deadline - time.monotonic()))
        alive = [th.name for th in self.threads if th.is_alive()]
        assert not alive, "requests still running: %s" % alive
        return self.results


def prom(text):
    """/metrics parsed by the Prometheus client's own parser:
    {(sample name, frozenset(labels)): value}."""
    parser = pytest.importorskip("prometheus_client.parser")
    out = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(text, name, **labels):
    labels.setdefault("pool", "main")
    return prom(text).get((name, frozenset(labels.items())))


def log_lines_of(o, needle):
    return [l for l in o.log().splitlines() if needle in l]


def worker_pids(o):
    return sorted(p["pid"] for p in o.pool()["processes"])


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stuck_until_replaced(o, first, timeout):
    """Polls /pid until another worker answers; returns (pid, monotonic time)."""
    def other():
        try:
            p = o.worker_pid(timeout=2)
        except (OSError, ValueError, AssertionError):
            return None
        return (p, time.monotonic()) if p != first else None
    return wait_for(other, timeout=timeout, what="a replacement worker", every=0.1)


# ------------------------------------------------------------------ --request-timeout

def test_a_stuck_request_gets_504_within_the_timeout_and_its_stack_and_request_are_logged(ops):
    o = ops("--request-timeout", "2")
    first = o.worker_pid()
    mark = o.mark("stuck")
    r, took = o.timed_get("/sleep", "s=30&mark=" + mark)
    assert not isinstance(r, Exception), r
    assert r.status == 504, r
    assert 2.0 <= took < TIMEOUT_ANSWER_BOUND, "504 after %.2f s with --request-timeout 2" % took
    # The pool serves the next request at once, on the same worker (the
    # stuck thread unwound).
    nxt, took = o.timed_get("/pid")
    assert nxt.status == 200 and int(nxt.body) == first
    assert took < 0.5, "the next request waited %.2f s" % took
    started = json.loads(o.read_mark(mark, "start"))
    wait_for(lambda: o.read_mark(mark, "end"), timeout=3, what="the stuck request to unwind")
    assert o.read_mark(mark, "end").endswith(".RequestTimeout")
    # One error entry: what, how long, which request, and the app's stack.
    text = o.log()
    entry = text[text.index("request timeout: "):]
    assert entry.startswith("request timeout: GET /sleep?s=30&mark=%s ran " % mark), entry[:300]
    entry = entry[:entry.index("request_id=") + 60]
    assert SLEEP_FRAME in entry, entry
    assert line_of("sleep_in_python(", "application") in entry, entry
    assert "request_id=%s" % started["request_id"] in entry, entry
    assert o.pool()["restarts"]["request-timeout"] == 0


def test_request_timeout_spares_the_other_thread_and_the_worker_when_the_stuck_thread_unwinds(ops):
    # --request-timeout 3: the other request (2.6 s) stays under it, and is
    # in flight when the stuck one's 504 goes out (3.0 to 3.75 s).
    o = ops("--request-timeout", "3", threads=2)
    first = o.worker_pid()
    mark = o.mark("unwinds")
    bg = Background(o)
    bg.start("stuck", "/sleep", "s=60&mark=" + mark)
    time.sleep(1.4)
    bg.start("other", "/sleep", "s=2.6")
    res = bg.join()
    stuck, _, stuck_end = res["stuck"]
    other, other_start, other_end = res["other"]
    assert not isinstance(stuck, Exception) and stuck.status == 504, stuck
    assert not isinstance(other, Exception), other
    assert other_start < stuck_end < other_end, "the other request did not span the timeout"
    assert other.status == 200, other
    body = json.loads(other.body)
    assert body["pid"] == first and body["pad"] == "x" * 4096, "the other request's body is cut"
    assert o.read_mark(mark, "end").endswith(".RequestTimeout"), "RequestTimeout was not raised in the thread"
    # Past the grace period: still the same worker, nothing asked.
    time.sleep(max(0.0, stuck_end + GRACE + 1.0 - time.monotonic()))
    assert o.worker_pid() == first
    assert worker_pids(o) == [first]
    assert not log_lines_of(o, "replacement worker")
    assert o.pool()["restarts"]["request-timeout"] == 0


def test_a_thread_that_never_unwinds_gets_its_worker_replaced_after_the_grace_period(ops):
    o = ops("--request-timeout", "2", "--graceful-timeout", "2", threads=2)
    first = o.worker_pid()
    # One C-level sleep: RequestTimeout waits for it to return (30 s).
    bg = Background(o)
    bg.start("stuck", "/csleep", "s=30")
    r504 = wait_for(lambda: bg.results.get("stuck"), timeout=TIMEOUT_ANSWER_BOUND + 0.5,
                    what="the stuck request's 504")
    resp, start, end = r504
    assert not isinstance(resp, Exception) and resp.status == 504, resp
    assert end - start < TIMEOUT_ANSWER_BOUND
    new, when = stuck_until_replaced(o, first, timeout=GRACE + 5)
    assert when - end >= GRACE - 0.6, "replaced %.2f s after the 504: before the grace period" % (when - end)
    assert log_lines_of(o, "has not ended 5s after its request timeout")
    pool = o.pool()
    assert pool["restarts"]["request-timeout"] == 1, pool["restarts"]
    assert new in [p["pid"] for p in pool["processes"]]
    assert sample(o.metrics(), "wsgi_fpm_restarts_total", cause="request-timeout") == 1
    # The stuck worker itself goes once --graceful-timeout is over.
    wait_for(lambda: first not in worker_pids(o), timeout=4, what="the stuck worker to go")
    wait_for(lambda: not _alive(first), timeout=2, what="the stuck worker's process to exit")


def nginx_bin():
    return shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.mark.skipif(not Path(nginx_bin()).exists(), reason="nginx is not installed")
def test_behind_nginx_the_client_gets_the_504_of_a_stuck_request_and_the_503_of_a_full_queue(
        ops, run_dir, request):
    o = ops("--request-timeout", "2", "--max-queue", "1")
    fe = SitesFrontEnd(run_dir, "nginx", {"ops": ("fastcgi.conf", {
        "BACKEND_PORT": o.b.ports["fastcgi"], "MOUNT": "", "NAME": "ops"})}, label="ops")
    request.addfinalizer(fe.stop)
    port = fe.ports["ops"]
    r = client.request(port, "GET", "/sleep?s=30", timeout=10)
    assert r.status == 504 and r.elapsed < TIMEOUT_ANSWER_BOUND + 0.5, r
    # One long request holds the only thread; of four more, one may wait.
    replies = {}

    def one(key, path):
        replies[key] = client.request(port, "GET", path, timeout=15)

    threads = [threading.Thread(target=one, args=("long", "/work?tag=long&s=1.5"))]
    threads[0].start()
    wait_for(lambda: o.calls() == ["long"], timeout=3, what="the long request to start")
    for i in range(4):
        threads.append(threading.Thread(target=one, args=("q%d" % i, "/work?tag=q%d" % i)))
        threads[-1].start()
    for t in threads:
        t.join(20)
    statuses = sorted(r.status for r in replies.values())
    assert statuses == [200, 200, 503, 503, 503], replies
    for r in replies.values():
        if r.status == 503:
            assert r.header("Retry-After", "").isdigit() and r.elapsed < 1.0, r
    assert len(o.calls()) == 2


# ------------------------------------------------------------------ --deadlock-timeout

def test_deadlock_timeout_kills_and_replaces_a_worker_stuck_in_c_holding_the_gil(ops):
    o = ops("--deadlock-timeout", "2", threads=2)
    first = o.worker_pid()
    # A catastrophic regular expression: minutes in C without releasing the GIL.
    r, took = o.timed_get("/regex", timeout=15)
    assert isinstance(r, Exception) or r.status >= 500, "the stuck request was answered: %r" % r
    assert took < 4.0, "the worker was killed only after %.2f s" % took
    new, _ = stuck_until_replaced(o, first, timeout=5)
    assert new != first
    assert log_lines_of(o, "deadlock-timeout"), o.log()[-2000:]
    assert any("pid=%d" % first in l for l in log_lines_of(o, "killed for deadlock-timeout"))
    pool = o.pool()
    assert pool["restarts"]["deadlock-timeout"] == 1, pool["restarts"]
    assert pool["restarts"]["crash"] == 0, "a deadlock kill is not a crash"
    assert sample(o.metrics(), "wsgi_fpm_restarts_total", cause="deadlock-timeout") == 1


def test_deadlock_timeout_spares_busy_python_code_running_longer_than_the_timeout(ops):
    o = ops("--deadlock-timeout", "2", threads=2)
    first = o.worker_pid()
    r, took = o.timed_get("/busy", "s=4")
    assert r.status == 200 and int(r.body) == first, r
    assert took >= 4.0
    assert o.worker_pid() == first
    assert not log_lines_of(o, "deadlock")
    assert o.pool()["restarts"]["deadlock-timeout"] == 0


def test_deadlock_timeout_kills_no_sooner_than_the_timeout_after_the_gil_was_taken(ops):
    o = ops("--deadlock-timeout", "2", threads=2)
    # Several tries, so that the GIL is taken at different points between
    # two heartbeats: the worker is never killed before 2 s have passed.
    for _ in range(2):
        time.sleep(0.13)
        r, held = o.timed_get("/gil", "s=30", timeout=15)
        assert isinstance(r, Exception), r
        assert held >= 1.9, "killed after the GIL was held %.2f s, with --deadlock-timeout 2: %s" % (
            held, log_lines_of(o, "GIL has been held"))
        wait_for(lambda: o.get("/pid", timeout=5).status == 200, timeout=10, what="the replacement")
    r, held = o.timed_get("/gil", "s=30", timeout=15)
    assert isinstance(r, Exception), r
    assert held >= 1.9, "killed after the GIL was held %.2f s, with --deadlock-timeout 2: %s" % (
        held, log_lines_of(o, "GIL has been held"))


# ------------------------------------------------------------------ --slow-log-timeout

def test_slow_log_timeout_logs_the_stack_once_and_lets_the_request_end_normally(ops):
    o = ops("--slow-log-timeout", "1", threads=2)
    assert o.get("/pid").status == 200            # a quick request is not slow
    mark = o.mark("slow")
    r, took = o.timed_get("/sleep", "s=2.2&mark=" + mark)
    assert r.status == 200 and json.loads(r.body)["pad"] == "x" * 4096, r
    assert took >= 2.2
    started = json.loads(o.read_mark(mark, "start"))
    slow = log_lines_of(o, "slow request:")
    assert len(slow) == 1, slow
    assert "GET /sleep?s=2.2&mark=%s running for " % mark in slow[0]
    text = o.log()
    entry = text[text.index("slow request:"):]
    entry = entry[:entry.index("request_id=") + 60]
    assert SLEEP_FRAME in entry, entry
    assert "request_id=%s" % started["request_id"] in entry, entry
    assert o.pool()["slow_requests"] == 1
    assert sample(o.metrics(), "wsgi_fpm_slow_requests_total") == 1


# ------------------------------------------------------------------ SIGUSR2

def test_sigusr2_logs_every_workers_thread_stacks_with_the_request_each_serves(ops):
    o = ops(processes=2, threads=2)
    pids = worker_pids(o)
    assert len(pids) == 2
    mark = o.mark("usr2")
    bg = Background(o)
    bg.start("busy", "/sleep", "s=2.5&mark=" + mark)
    wait_for(lambda: o.read_mark(mark, "start"), timeout=3, what="the busy request to start")
    started = json.loads(o.read_mark(mark, "start"))
    os.kill(o.pid, signal.SIGUSR2)
    # Every request thread of both workers accounted for (2 x 2), each
    # worker's dump under its own pid.
    wait_for(lambda: len(re.findall(r"SIGUSR2: wsgi-\d (?:serving|idle)", o.log())) == 4,
             timeout=3, what="all four request threads in the dump")
    text = o.log()
    dumped = {int(p) for p in re.findall(
        r"^wsgi-fpm\[pool main (\d+)\] \S+ +WARN SIGUSR2: the Python stacks", text, re.M)}
    assert dumped == set(pids), text[-3000:]
    serving = (r"^wsgi-fpm\[pool main (\d+)\] \S+ +WARN SIGUSR2: wsgi-\d serving "
               + re.escape("GET /sleep?s=2.5&mark=%s (request %s, " % (mark, started["request_id"])))
    m = re.search(serving, text, re.M)
    assert m, text[-3000:]
    assert int(m.group(1)) == started["pid"]
    entry = text[m.end():].split("\nwsgi-fpm[")[0]
    assert SLEEP_FRAME in entry, entry
    # Nothing stopped: the request ends normally, same master and workers.
    (r, _, _), = bg.join().values()
    assert r.status == 200 and json.loads(r.body)["pad"] == "x" * 4096, r
    assert o.b.proc.alive()
    assert worker_pids(o) == pids
    assert o.worker_pid() in pids


# ------------------------------------------------------------------ rlimits

def test_a_worker_that_uses_its_cpu_time_limit_is_replaced_and_the_limit_named(ops):
    o = ops("--cpu-time-limit", "2")
    first = o.worker_pid()
    r, took = o.timed_get("/cpu", timeout=20)
    # The worker died under the request: the connection closed unanswered.
    assert isinstance(r, Exception), r
    assert took < 10, took
    wait_for(lambda: o.pool()["restarts"]["cpu-time-limit"] == 1, timeout=15,
             what="the restart counted as cpu-time-limit")
    wait_for(lambda: [p["state"] for p in o.pool()["processes"]] == ["idle"], timeout=15,
             what="a replacement")
    assert o.worker_pid() != first
    assert o.get("/work", "tag=after").status == 200
    assert log_lines_of(o, "it used its cpu-time-limit of 2s of CPU"), o.log()[-3000:]
    assert o.pool()["restarts"]["crash"] == 0
    assert sample(o.metrics(), "wsgi_fpm_restarts_total", cause="cpu-time-limit") == 1
    assert sample(o.metrics(), "wsgi_fpm_limit", limit="cpu-time-limit") == 2


@pytest.mark.parametrize("what,option,value,cause", [
    ("memory", "--memory-limit", "400", "memory-limit"),
    ("files", "--open-files-limit", "128", "open-files-limit"),
])
def test_an_application_at_its_resource_limit_gets_500_and_its_worker_is_replaced_gracefully(
        ops, what, option, value, cause):
    o = ops(option, value)
    first = o.worker_pid()
    r = o.get("/exhaust", "what=" + what, timeout=30)
    assert r.status == 500, r
    wait_for(lambda: o.pool()["restarts"][cause] == 1, timeout=15,
             what="the replacement counted as %s" % cause)
    wait_for(lambda: [p["pid"] for p in o.pool()["processes"] if p["state"] == "idle"] not in ([], [first]),
             timeout=15, what="a new worker")
    assert o.worker_pid() != first
    assert o.get("/work", "tag=after").status == 200
    assert log_lines_of(o, "under %s %s" % (cause, value)), o.log()[-3000:]
    assert o.pool()["restarts"]["crash"] == 0
    m = o.metrics()
    assert sample(m, "wsgi_fpm_restarts_total", cause=cause) == 1
    configured = int(value) << 20 if cause == "memory-limit" else int(value)
    assert sample(m, "wsgi_fpm_limit", limit=cause) == configured
    assert o.pool()["limits"][cause] == configured


# ------------------------------------------------------------------ the queue

def test_max_queue_answers_the_requests_beyond_it_503_with_retry_after_without_the_application(ops):
    o = ops("--max-queue", "2")
    bg = Background(o)
    bg.start("long", "/work", "tag=long&s=3")
    wait_for(lambda: o.calls() == ["long"], timeout=3, what="the long request to start")
    for i in range(6):
        bg.start("q%d" % i, "/work", "tag=q%d" % i)
    res = bg.join()
    refused = {k: v for k, v in res.items() if not isinstance(v[0], Exception) and v[0].status == 503}
    served = {k: v for k, v in res.items() if not isinstance(v[0], Exception) and v[0].status == 200}
    assert len(refused) == 4 and len(served) == 3, {k: v[0] for k, v in res.items()}
    for key, (r, start, end) in refused.items():
        assert r.header("Retry-After", "").isdigit() and int(r.header("Retry-After")) >= 1, r
        assert end - start < 1.0, "%s refused after %.2f s" % (key, end - start)
    # The application ran exactly the requests that were answered 200.
    assert sorted(o.calls()) == sorted(r.body.decode() for r, _, _ in served.values())
    pool = o.pool()
    assert pool["queue_full"] == 4 and pool["queue_timeouts"] == 0
    m = o.metrics()
    assert sample(m, "wsgi_fpm_queue_refusals_total", reason="full") == 4
    assert sample(m, "wsgi_fpm_queue_refusals_total", reason="timeout") == 0


@pytest.mark.parametrize("stamp", ["seconds", "milliseconds"])
def test_queue_timeout_refuses_a_request_whose_front_end_stamp_is_older_than_the_timeout(ops, stamp):
    o = ops("--queue-timeout", "1")

    def x_request_start(age):
        t = time.time() - age
        # nginx: fastcgi_param HTTP_X_REQUEST_START "t=${msec}" (seconds.millis);
        # other front ends send whole milliseconds.
        return [("X-Request-Start", "t=%.3f" % t if stamp == "seconds" else "t=%d" % (t * 1000))]

    r, took = o.timed_get("/work", "tag=old", headers=x_request_start(5))
    assert r.status == 503, r
    assert r.header("Retry-After", "").isdigit(), r
    assert took < 1.0
    r = o.get("/work", "tag=fresh", headers=x_request_start(0.2))
    assert r.status == 200 and r.body == b"fresh", r
    assert o.calls() == ["fresh"]
    assert o.pool()["queue_timeouts"] == 1
    assert sample(o.metrics(), "wsgi_fpm_queue_refusals_total", reason="timeout") == 1
    assert log_lines_of(o, "over --queue-timeout")


def test_queue_timeout_answers_a_waiting_request_when_its_time_is_up(ops):
    o = ops("--queue-timeout", "1")
    bg = Background(o)
    bg.start("long", "/work", "tag=long&s=3")
    wait_for(lambda: o.calls() == ["long"], timeout=3, what="the long request to start")
    stamp = [("X-Request-Start", "t=%.3f" % time.time())]
    r, took = o.timed_get("/work", "tag=waiter", headers=stamp)
    assert r.status == 503, r
    bg.join()
    assert took < 2.0, "503 after %.2f s with --queue-timeout 1" % took


def test_queue_timeout_counts_the_wait_of_an_unstamped_request_from_its_arrival(ops):
    """No X-Request-Start: the request waits in the listen queue (the worker
    accepts only with a free thread), and is dated there (`net::backlog`)."""
    o = ops("--queue-timeout", "1")
    bg = Background(o)
    bg.start("long", "/work", "tag=long&s=2.5")
    wait_for(lambda: o.calls() == ["long"], timeout=3, what="the long request to start")
    r, took = o.timed_get("/work", "tag=waiter")
    assert r.status == 503, r
    assert r.header("Retry-After"), r
    assert 0.9 < took < 2.0, "503 after %.2f s with --queue-timeout 1" % took
    bg.join()
    assert "waiter" not in o.calls(), "the application ran a request that waited %.1f s" % took
    assert o.pool()["queue_timeouts"] >= 1


def test_queue_timeout_refuses_what_waited_behind_every_worker_of_the_pool_and_serves_the_rest(ops):
    """Two workers, both busy: the request that waits past the timeout in
    the listen queue both share is refused once, at its time; what comes
    after a worker frees is served."""
    o = ops("--queue-timeout", "1", processes=2)
    bg = Background(o)
    bg.start("long-a", "/work", "tag=long-a&s=2.5")
    bg.start("long-b", "/work", "tag=long-b&s=2.5")
    wait_for(lambda: sorted(o.calls()) == ["long-a", "long-b"], timeout=3, what="both long requests to start")
    bg.start("waiter", "/work", "tag=waiter")
    # It waits in the kernel's listen queue, and /status shows it there.
    wait_for(lambda: o.pool()["listen_queue"] == 1, timeout=1, what="the waiter in the listen queue")
    assert o.pool()["max_listen_queue"] >= 1
    res = bg.join()
    r, start, end = res["waiter"]
    assert r.status == 503 and 0.9 < end - start < 2.0, (r, end - start)
    for i in range(5):
        assert o.get("/work", "tag=after%d" % i).status == 200
    assert sorted(o.calls()) == ["after%d" % i for i in range(5)] + ["long-a", "long-b"]
    assert o.pool()["queue_timeouts"] == 1
    assert log_lines_of(o, "in the listen queue for a thread, over --queue-timeout")


def _work_params(tag, s=0):
    return wire.cgi_params("GET", "/work", "tag=%s&s=%s" % (tag, s))


def _send_request(sock, req_id, tag, s=0, keep_conn=True):
    sock.sendall(wire.fcgi_begin(req_id, keep_conn) + wire.fcgi_params_block(_work_params(tag, s), req_id)
                 + wire.fcgi_record(wire.FCGI_STDIN, req_id))


def _ends(sock, count, timeout):
    """Request ids whose FCGI_END_REQUEST arrived, in order, until `count` or
    `timeout` seconds."""
    reader = wire.FcgiReader(sock)
    ended = []
    deadline = time.monotonic() + timeout
    try:
        while len(ended) < count:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            _, rtype, rid, _ = reader.record()
            if rtype == wire.FCGI_END_REQUEST:
                ended.append(rid)
    except (OSError, ConnectionError):
        pass
    return ended


@pytest.mark.parametrize("how", [
    "abort-record",
    "connection-closed",
    "multiplexed-abort",
])
def test_a_request_that_gave_up_while_waiting_for_a_thread_is_never_started(ops, how):
    o = ops()
    long = wire.connect(o.b.addr("fastcgi"), timeout=10)
    _send_request(long, 1, "long", 2)
    wait_for(lambda: o.calls() == ["long"], timeout=3, what="the long request to start")
    if how == "multiplexed-abort":
        # On the same kept connection, multiplexed (FCGI_MPXS_CONNS is 1).
        _send_request(long, 2, "gave-up")
        time.sleep(0.2)
        long.sendall(wire.fcgi_record(wire.FCGI_ABORT_REQUEST, 2))
    else:
        other = wire.connect(o.b.addr("fastcgi"), timeout=10)
        _send_request(other, 1, "gave-up", keep_conn=False)
        time.sleep(0.2)
        if how == "abort-record":
            other.sendall(wire.fcgi_record(wire.FCGI_ABORT_REQUEST, 1))
        else:
            other.close()
    assert 1 in _ends(long, 2 if how == "multiplexed-abort" else 1, timeout=6)
    time.sleep(0.5)
    long.close()
    assert o.calls() == ["long"], "the application ran a request its front end had given up"


def _kept_connection_with_one_answer(o):
    """A kept FastCGI connection (nginx fastcgi_keep_conn) that has served
    one request and waits, parked, for its next."""
    kept = wire.connect(o.b.addr("fastcgi"), timeout=10)
    r = wire.fcgi_request(None, _work_params("first"), keep_conn=True, sock=kept)
    assert r.status == 200 and r.body == b"first", r
    return kept


def test_queue_timeout_answers_a_request_waiting_on_a_kept_connection_when_its_time_is_up(ops):
    """With keep_conn the listen queue stays empty: the next request waits
    on its kept connection, inside the worker, and is answered there."""
    o = ops("--queue-timeout", "1")
    kept = _kept_connection_with_one_answer(o)
    try:
        bg = Background(o)
        bg.start("long", "/work", "tag=long&s=3")
        wait_for(lambda: o.calls() == ["first", "long"], timeout=3, what="the long request to start")
        t = time.monotonic()
        r = wire.fcgi_request(None, _work_params("waiter"), keep_conn=True, sock=kept, timeout=10)
        took = time.monotonic() - t
        assert r.status == 503 and r.header("Retry-After", "").isdigit(), r
        assert 0.9 < took < 2.0, "503 after %.2f s with --queue-timeout 1" % took
        bg.join()
        # The connection goes on.
        r = wire.fcgi_request(None, _work_params("after"), keep_conn=True, sock=kept)
        assert r.status == 200 and r.body == b"after", r
    finally:
        kept.close()
    assert o.calls() == ["first", "long", "after"]
    assert o.pool()["queue_timeouts"] == 1
    assert log_lines_of(o, "on a kept connection: answered 503")


def test_max_queue_refuses_the_newest_requests_waiting_on_kept_connections(ops):
    o = ops("--max-queue", "1")
    kept = [_kept_connection_with_one_answer(o) for _ in range(3)]
    try:
        bg = Background(o)
        bg.start("long", "/work", "tag=long&s=2.5")
        wait_for(lambda: o.calls()[-1:] == ["long"], timeout=3, what="the long request to start")
        sent = []
        for i, sock in enumerate(kept):
            _send_request(sock, 1, "k%d" % i)
            sent.append(time.monotonic())
            time.sleep(0.2)
        answers = {}
        # The refused ones first: their 503 must not wait for the long one.
        for i in (1, 2, 0):
            r = wire.FcgiReader(kept[i]).response(1)
            answers[i] = (wire.parse_head(r[0], "cgi")[0], time.monotonic() - sent[i])
        bg.join()
    finally:
        for sock in kept:
            sock.close()
    assert answers[0][0] == 200, answers
    for i in (1, 2):
        status, took = answers[i]
        assert status == 503 and took < 1.0, answers
    assert o.calls().count("k0") == 1 and "k1" not in o.calls() and "k2" not in o.calls()
    assert o.pool()["queue_full"] == 2


def test_a_request_waiting_on_a_kept_connection_is_counted_dated_and_never_started_once_closed(ops):
    o = ops()
    kept = _kept_connection_with_one_answer(o)
    bg = Background(o)
    bg.start("long", "/work", "tag=long&s=2")
    wait_for(lambda: o.calls() == ["first", "long"], timeout=3, what="the long request to start")
    _send_request(kept, 1, "gave-up")
    wait_for(lambda: o.pool()["queued_requests"] == 1, timeout=2, what="the waiting request counted")
    kept.close()
    wait_for(lambda: o.pool()["queued_requests"] == 0, timeout=2, what="the closed one no longer counted")
    bg.join()
    time.sleep(0.5)
    assert o.calls() == ["first", "long"], "the application ran a request its front end had given up"


def test_a_request_that_waited_on_a_kept_connection_has_that_wait_as_its_queue_time(ops):
    o = ops()
    kept = _kept_connection_with_one_answer(o)
    try:
        bg = Background(o)
        bg.start("long", "/work", "tag=long&s=1.5")
        wait_for(lambda: o.calls() == ["first", "long"], timeout=3, what="the long request to start")
        before = o.pool("?full")["queue_time_seconds"]["sum_seconds"]
        r = wire.fcgi_request(None, _work_params("waiter"), keep_conn=True, sock=kept, timeout=10)
        assert r.status == 200 and r.body == b"waiter", r
        bg.join()
    finally:
        kept.close()
    waited = o.pool("?full")["queue_time_seconds"]["sum_seconds"] - before
    assert 0.8 < waited < 2.5, "queue time %.2f s for a request that waited about 1.4 s" % waited


def test_every_request_multiplexed_on_a_kept_connection_behind_a_busy_thread_is_answered(ops):
    o = ops()
    s = wire.connect(o.b.addr("fastcgi"), timeout=10)
    try:
        _send_request(s, 1, "long", 1)
        wait_for(lambda: o.calls() == ["long"], timeout=3, what="the long request to start")
        for rid in (2, 3):
            _send_request(s, rid, "mpx%d" % rid)
        ended = _ends(s, 3, timeout=3)
    finally:
        s.close()
    assert sorted(ended) == [1, 2, 3], "FCGI_END_REQUEST only for %s; the app ran %s" % (ended, o.calls())


# ------------------------------------------------------------------ --max-rss

def test_max_rss_recycles_a_growing_worker_without_a_failed_request_and_counts_it(ops):
    o = ops("--max-rss", "64", "--rss-samples", "3", threads=2)
    first = o.worker_pid()
    failures, done = [], threading.Event()

    def load():
        while not done.is_set():
            try:
                r = o.get("/pid", timeout=10)
                if r.status != 200:
                    failures.append(r)
            except (OSError, ValueError) as e:
                failures.append(repr(e))
            time.sleep(0.05)

    loaders = [threading.Thread(target=load) for _ in range(2)]
    for t in loaders:
        t.start()
    try:
        assert int(o.get("/grow", "mb=100").body) == first
        new, _ = stuck_until_replaced(o, first, timeout=10)
    finally:
        done.set()
        for t in loaders:
            t.join(30)
    assert not failures, failures[:5]
    pool = o.pool()
    assert pool["restarts"]["max-rss"] == 1, pool["restarts"]
    assert sum(pool["restarts"].values()) == 1, pool["restarts"]
    assert [p["pid"] for p in pool["processes"] if p["state"] != "retiring"] == [new]
    assert sample(o.metrics(), "wsgi_fpm_restarts_total", cause="max-rss") == 1


# ------------------------------------------------------------------ /status and /metrics

SPEC_TOP = {"version", "pid", "uptime_seconds", "pools"}
SPEC_POOL = {"processes_configured", "threads", "max_processes", "accepted_connections",
             "listen_queue", "max_listen_queue", "active_processes", "idle_processes",
             "slow_requests", "restarts", "processes"}
SPEC_RESTARTS = {"maximum-requests", "crash", "request-timeout", "reload"}
SPEC_PROCESS = {"pid", "generation", "state", "requests", "rss_bytes", "current"}
SPEC_CURRENT = {"request_id", "method", "uri", "seconds"}


def test_status_has_the_spec_keys_and_counts_requests_connections_and_busy_threads(ops):
    o = ops(processes=2, threads=2)
    before = o.pool()
    for i in range(5):
        assert o.get("/pid").status == 200
    mark = o.mark("busy")
    bg = Background(o)
    bg.start("busy", "/sleep", "s=2&mark=" + mark)
    wait_for(lambda: o.read_mark(mark, "start"), timeout=3, what="the busy request to start")
    started = json.loads(o.read_mark(mark, "start"))
    doc = o.status()
    assert SPEC_TOP <= set(doc), doc.keys()
    assert doc["pid"] == o.pid
    assert list(doc["pools"]) == ["main"]
    pool = doc["pools"]["main"]
    assert SPEC_POOL <= set(pool), set(pool)
    assert SPEC_RESTARTS <= set(pool["restarts"]), pool["restarts"]
    assert (pool["processes_configured"], pool["threads"], pool["max_processes"]) == (2, 2, 2)
    # Requests handed to the application: the five, and the one in flight.
    assert pool["requests"] - before["requests"] == 6
    assert pool["accepted_connections"] - before["accepted_connections"] == 6
    assert (pool["active_processes"], pool["idle_processes"], pool["total_processes"]) == (1, 1, 2)
    assert pool["busy_threads"] == 1 and pool["busy_ratio"] == 0.25
    assert pool["slow_requests"] == 0 and pool["listen_queue"] == 0
    assert len(pool["processes"]) == 2
    for p in pool["processes"]:
        assert SPEC_PROCESS <= set(p), p
        assert p["generation"] == 1 and p["rss_bytes"] > 0
    busy = next(p for p in pool["processes"] if p["current"])
    assert busy["pid"] == started["pid"] and busy["state"] == "busy"
    (cur,) = busy["current"]
    assert set(cur) == SPEC_CURRENT, "plain /status has these keys only: %s" % cur
    assert (cur["method"], cur["uri"]) == ("GET", "/sleep?s=2&mark=" + mark)
    assert cur["request_id"] == started["request_id"]
    assert 0 < cur["seconds"] < 2
    idle = next(p for p in pool["processes"] if not p["current"])
    assert idle["state"] == "idle"
    # The same numbers in /metrics.
    m = o.metrics()
    for name, value in [("wsgi_fpm_requests_total", pool["requests"]),
                        ("wsgi_fpm_accepted_connections_total", pool["accepted_connections"]),
                        ("wsgi_fpm_busy_ratio", 0.25), ("wsgi_fpm_busy_threads", 1),
                        ("wsgi_fpm_processes", 2), ("wsgi_fpm_active_processes", 1),
                        ("wsgi_fpm_idle_processes", 1), ("wsgi_fpm_processes_configured", 2),
                        ("wsgi_fpm_threads", 2), ("wsgi_fpm_max_processes", 2)]:
        assert sample(m, name) == value, (name, sample(m, name), value)
    bg.join()


def test_status_full_shows_the_current_request_with_method_uri_seconds_and_request_id(ops):
    o = ops(threads=2)
    mark = o.mark("full")
    bg = Background(o)
    bg.start("busy", "/sleep", "s=2&mark=" + mark)
    wait_for(lambda: o.read_mark(mark, "start"), timeout=3, what="the busy request to start")
    started = json.loads(o.read_mark(mark, "start"))
    time.sleep(0.5)
    pool = o.pool("?full")
    (w,) = pool["processes"]
    (cur,) = w["current"]
    assert (cur["method"], cur["uri"], cur["request_id"]) == ("GET", "/sleep?s=2&mark=" + mark,
                                                              started["request_id"])
    assert 0.4 < cur["seconds"] < 2
    assert cur["thread"] in (0, 1)
    assert abs(cur["started"] + cur["seconds"] - time.time()) < 1.0
    assert w["busy_threads"] == 1 and w["slow_requests"] == 0
    assert 0 <= w["heartbeat_age_seconds"] < 2.0
    for h in ("request_duration_seconds", "queue_time_seconds", "gil_wait_seconds"):
        assert pool[h]["buckets"][-1]["le"] == "+Inf" and pool[h]["count"] >= 1, pool[h]
    bg.join()


def _last_request_after(o, before):
    """The worker's `last_request` once it is no longer `before`: it is
    recorded just after the response has gone out, so a status read at
    once may still show the request before (5 s at most)."""
    deadline = time.monotonic() + 5
    while True:
        (w,) = o.pool("?full")["processes"]
        if w["last_request"] != before or time.monotonic() > deadline:
            return w["last_request"]
        time.sleep(0.02)


def test_status_full_shows_the_last_requests_cpu_time_and_memory_growth(ops):
    o = ops()
    (w,) = o.pool("?full")["processes"]
    last = w["last_request"]
    assert o.get("/busy", "s=0.6").status == 200
    last = _last_request_after(o, last)
    assert 0.4 < last["cpu_seconds"] < 3.0, last
    assert o.get("/grow", "mb=64").status == 200
    last = _last_request_after(o, last)
    assert last["rss_change_bytes"] >= 50 << 20, last
    assert last["cpu_seconds"] < 0.4, last
    # Under the peak it reached: no growth.
    assert o.get("/work", "tag=small").status == 200
    last = _last_request_after(o, last)
    assert last["rss_change_bytes"] < 8 << 20, last


@pytest.mark.parametrize("stamp", ["t=1e25", "t=1", "t=%d" % (time.time() + 3600), "t=nonsense"])
def test_an_implausible_front_end_stamp_is_ignored_and_harms_nothing(ops, stamp):
    """A client can send X-Request-Start itself (fastcgi_params passes
    headers on): a stamp far off is not a queue time, and never a crash."""
    o = ops("--queue-timeout", "5", threads=2)
    for i in range(3):
        r = o.get("/work", "tag=s%d" % i, headers=[("X-Request-Start", stamp)])
        assert r.status == 200, r
    assert o.pool("?full")["queue_time_seconds"]["sum_seconds"] < 1.0
    assert o.pool()["queue_timeouts"] == 0


def test_queue_time_counts_from_the_front_ends_stamp_where_it_sends_one(ops):
    o = ops()
    stamp = [("X-Request-Start", "t=%.3f" % (time.time() - 2.0))]
    assert o.get("/work", "tag=stamped", headers=stamp).status == 200
    h = o.pool("?full")["queue_time_seconds"]
    assert h["count"] >= 1 and 1.8 < h["sum_seconds"] < 4.0, h
    assert sample(o.metrics(), "wsgi_fpm_queue_time_seconds_sum") > 1.8


@pytest.mark.parametrize("stuck", ["sleeping", "holding-the-gil"])
def test_status_answers_within_100_ms_while_every_thread_of_every_worker_is_stuck(ops, stuck):
    threads = 2 if stuck == "sleeping" else 1
    o = ops(processes=2, threads=threads)
    bg = Background(o)
    for i in range(2 * threads + 2):    # more than the threads: none left idle
        bg.start("s%d" % i, "/sleep" if stuck == "sleeping" else "/gil", "s=2.5&n=%d" % i)
    wait_for(lambda: o.pool()["busy_threads"] == 2 * threads, timeout=3, what="every thread busy")
    for path in ["/status"] * 5 + ["/status?full", "/metrics"]:
        r = o.http(path)
        assert r.status == 200, r
        assert r.elapsed < 0.1, "%s took %.0f ms with every thread stuck" % (path, r.elapsed * 1000)
    pool = o.pool()
    assert pool["busy_ratio"] == 1.0 and pool["active_processes"] == 2
    bg.join()


def test_metrics_parse_as_prometheus_text_with_help_and_type_for_every_family(ops):
    o = ops("--slow-log-timeout", "5", "--max-queue", "10", threads=2)
    assert o.get("/pid").status == 200
    r = o.http("/metrics")
    assert r.status == 200
    assert r.header("Content-Type", "").startswith("text/plain; version=0.0.4"), r.headers
    text = r.body.decode()
    samples = prom(text)            # raises on anything the parser rejects
    helps = set(re.findall(r"^# HELP (\S+) \S", text, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert helps == set(types), "HELP without TYPE or the reverse: %s" % (helps ^ set(types))
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, "sample %r has no # TYPE" % line
        assert name.startswith("wsgi_fpm_"), line
        if name not in ("wsgi_fpm_info", "wsgi_fpm_uptime_seconds"):
            assert 'pool="main"' in line, line
    for name, kind in types.items():
        assert kind in ("counter", "gauge", "histogram"), (name, kind)
        assert not kind == "counter" or name.endswith("_total"), name
    # The families docs/operations.md lists.
    for name in ["wsgi_fpm_busy_ratio", "wsgi_fpm_busy_threads", "wsgi_fpm_queued_requests",
                 "wsgi_fpm_processes", "wsgi_fpm_active_processes", "wsgi_fpm_idle_processes",
                 "wsgi_fpm_processes_configured", "wsgi_fpm_max_processes", "wsgi_fpm_threads",
                 "wsgi_fpm_limit", "wsgi_fpm_listen_queue", "wsgi_fpm_max_listen_queue",
                 "wsgi_fpm_listen_queue_len", "wsgi_fpm_rss_bytes", "wsgi_fpm_requests_total",
                 "wsgi_fpm_accepted_connections_total", "wsgi_fpm_slow_requests_total",
                 "wsgi_fpm_queue_refusals_total", "wsgi_fpm_restarts_total",
                 "wsgi_fpm_max_processes_reached_total", "wsgi_fpm_request_duration_seconds",
                 "wsgi_fpm_queue_time_seconds", "wsgi_fpm_gil_wait_seconds", "wsgi_fpm_info",
                 "wsgi_fpm_uptime_seconds"]:
        assert name in types, "%s missing from /metrics" % name
    assert sample(text, "wsgi_fpm_limit", limit="max-queue") == 10
    assert sample(text, "wsgi_fpm_limit", limit="slow-log-timeout") == 5
    assert samples[("wsgi_fpm_request_duration_seconds_count", frozenset({("pool", "main")}))] >= 1


def test_the_grafana_dashboard_queries_only_metrics_and_labels_that_metrics_has(ops):
    o = ops()
    text = o.metrics()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    names = set(types)
    names |= {n + s for n, k in types.items() if k == "histogram" for s in ("_bucket", "_sum", "_count")}
    causes = set(re.findall(r'wsgi_fpm_restarts_total\{pool="main",cause="([^"]+)"\}', text))
    dashboard = json.loads((APPS.parent.parent / "conf" / "grafana-dashboard.json").read_text())
    exprs = []

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                (exprs.append(v) if k == "expr" else walk(v))
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(dashboard)
    assert exprs
    labels = {}
    for name, inner in re.findall(r"^(wsgi_fpm_\w+)\{([^}]*)\}", text, re.M):
        labels.setdefault(name, set()).update(re.findall(r'(\w+)="', inner))
    for expr in exprs:
        used = re.findall(r"wsgi_fpm_\w+", expr)
        for name in used:
            assert name in names, "the dashboard queries %s, which /metrics does not have" % name
        # Every label a selector matches on, and every label it groups by,
        # is one those series carry.
        for name, inner in re.findall(r"(wsgi_fpm_\w+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", inner):
                assert label in labels.get(name, ()), "%s has no label %s (in %s)" % (name, label, expr)
        carried = set().union(*(labels.get(n, set()) for n in used))
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (g.strip() for g in group.split(","))):
                assert label in carried, "grouping by %s, which %s do not carry (in %s)" % (label, used, expr)
    # The restart causes the docs name for the dashboard's restarts panel.
    assert {"crash", "request-timeout", "deadlock-timeout", "max-rss", "maximum-requests",
            "reload"} <= causes, causes


def test_wsgi_fpm_status_prints_the_table_with_the_workers_pids_and_current_uris(ops):
    o = ops(processes=2, threads=2)
    mark = o.mark("table")
    bg = Background(o)
    bg.start("busy", "/sleep", "s=2&mark=" + mark)
    wait_for(lambda: o.read_mark(mark, "start"), timeout=3, what="the busy request to start")
    pids = worker_pids(o)
    out = subprocess.run([wsgi_fpm_bin(), "status", "%s:%d" % (HOST, o.status_port)],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    table = out.stdout
    assert "master pid %d" % o.pid in table, table
    assert re.search(r"pool main: 2 processes \(1 active, 1 idle\) of 2 configured, 2 threads each, busy 25%", table), table
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r"^  (\d+) .*$", table, re.M)}
    assert sorted(rows) == pids, table
    busy = json.loads(o.read_mark(mark, "start"))["pid"]
    assert re.search(r"busy .* GET /sleep\?s=2&mark=%s \(\d+\.\ds\)$" % re.escape(mark), rows[busy]), table
    idle = next(p for p in pids if p != busy)
    assert rows[idle].rstrip().endswith(" -") and " idle " in rows[idle], table
    js = subprocess.run([wsgi_fpm_bin(), "status", "%s:%d" % (HOST, o.status_port), "--json"],
                        capture_output=True, text=True, timeout=10)
    assert js.returncode == 0, js.stderr
    assert json.loads(js.stdout)["pid"] == o.pid
    bg.join()


def test_wsgi_fpm_status_watch_redraws_the_table_until_interrupted(ops):
    """--watch redraws every 2 s (clearing the screen) and shows what
    changed; Ctrl-C ends it with status 0."""
    o = ops()
    watch = subprocess.Popen([wsgi_fpm_bin(), "status", "%s:%d" % (HOST, o.status_port), "--watch"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.8)
        for i in range(3):
            assert o.get("/work", "tag=w%d" % i).status == 200
        time.sleep(2.4)
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, err
    frames = [f for f in out.split("\x1b[H\x1b[2J") if f.strip()]
    assert len(frames) >= 2, out
    assert all("master pid %d" % o.pid in f and "Ctrl-C to stop" in f for f in frames), out
    served = [int(m.group(1)) for f in frames for m in [re.search(r"requests (\d+)", f)] if m]
    assert len(served) == len(frames) and served[-1] >= served[0] + 3, (served, out)


# ------------------------------------------------------------------ the error log

def _json_lines(text):
    """The error log's lines (the harness's first line is the command)."""
    lines = [l for l in text.splitlines() if l and not l.startswith("$ ")]
    bad = []
    docs = []
    for l in lines:
        try:
            docs.append(json.loads(l))
        except ValueError:
            bad.append(l)
    return docs, bad


def test_with_log_format_json_wsgi_fpms_own_lines_parse_as_json(ops):
    o = ops("--log-format", "json", "--request-timeout", "2", "--slow-log-timeout", "1", threads=2)
    assert o.get("/pid").status == 200
    mark = o.mark("json")
    r = o.get("/sleep", "s=30&mark=" + mark)          # slow, then a timeout with its stack
    assert r.status == 504
    os.kill(o.pid, signal.SIGUSR2)
    wait_for(lambda: "SIGUSR2: wsgi-1" in o.log(), timeout=3, what="the SIGUSR2 dump")
    docs, bad = _json_lines(o.log())
    assert not bad, bad[:5]
    messages = [d["message"] for d in docs]
    assert any(m.startswith("slow request:") for m in messages)
    timeout = next(d for d in docs if d["message"].startswith("request timeout:"))
    assert SLEEP_FRAME in timeout["message"]
    started = json.loads(o.read_mark(mark, "start"))
    assert timeout["request_id"] == started["request_id"]
    assert timeout["level"] == "ERROR"


def test_with_log_format_json_every_line_names_its_pool_and_pid(ops):
    o = ops("--log-format", "json", "--slow-log-timeout", "1")
    assert o.get("/sleep", "s=1.3").status == 200
    docs, _ = _json_lines(o.log())
    assert docs
    no_pid = [d for d in docs if "pid" not in d]
    worker_without_pool = [d for d in docs if d.get("process") == "worker" and "pool" not in d]
    assert any(d.get("process") == "worker" for d in docs), docs[:3]
    assert not no_pid and not worker_without_pool, (no_pid + worker_without_pool)[:3]


def test_with_log_format_json_the_applications_output_is_json_too(ops):
    o = ops("--log-format", "json")
    mark = o.mark("json-app")
    assert o.get("/log", "m=" + mark).status == 200
    time.sleep(0.3)
    docs, bad = _json_lines(o.log())
    assert not bad, bad
    # Each way the application writes arrives as a JSON entry of its own,
    # tagged with the request.
    for via in ("stdout", "stderr", "errors", "logging"):
        found = [d for d in docs if "%s-%s" % (via, mark) in json.dumps(d)]
        assert found, "%s output is not among the JSON entries" % via
        assert any(d.get("request_id") for d in found), found


def _app_output(ops, tmp_path, *args):
    log = tmp_path / "error.log"
    o = ops(*args, error_log=log)
    mark = o.mark("out")
    assert o.get("/log", "m=" + mark).status == 200
    time.sleep(0.3)
    return o, mark, log.read_text()


def test_the_applications_stderr_wsgi_errors_and_logging_reach_the_error_log(ops, tmp_path):
    o, mark, text = _app_output(ops, tmp_path)
    for via in ("stderr", "errors", "logging"):
        assert "%s-%s" % (via, mark) in text, "%s output missing from the error log:\n%s" % (via, text)
    # wsgi.errors lines carry the request's id.
    (line,) = [l for l in text.splitlines() if "errors-" + mark in l]
    assert re.search(r"request_id=\w+-\w+", line), line


def test_the_applications_stdout_reaches_the_error_log(ops, tmp_path):
    o, mark, text = _app_output(ops, tmp_path)
    assert "stdout-" + mark in text


def test_every_line_the_application_writes_carries_its_request_id(ops, tmp_path):
    o, mark, text = _app_output(ops, tmp_path)
    lines = [l for l in text.splitlines() if mark in l]
    assert len(lines) >= 3, lines
    # The id is a field of wsgi-fpm's own line, or in the prefix of what the
    # application wrote: `wsgi-fpm[pool main PID REQUEST-ID]`.
    untagged = [l for l in lines
                if "request_id=" not in l and not re.search(r"\[pool \S+ \d+ \w+-\w+\]", l)]
    assert not untagged, untagged
