"""Dynamic pools (SPEC §4 --max-processes, --processes 0), observed from
outside: how many workers there are, and which pids answer, under load and
after it."""
import json
import threading
import time

import pytest

import harness
from harness import APPS, wait_for

SLEEPER = APPS / "sleeper.py"


def workers(b):
    return sorted(b.proc.descendants())



@pytest.fixture
def start(run_dir):
    started = []

    def _start(name, *args, ready=True):
        b = harness.WsgiFpm(run_dir, name, SLEEPER, args, protocols=("fastcgi",))
        started.append(b)
        if ready:
            b.wait_ready()
        return b

    yield _start
    for b in started:
        b.stop()


def slow_requests(b, n, seconds):
    """n concurrent requests that each sleep `seconds`; returns the pids
    that answered (None for a failed request) and the most workers seen."""
    pids = [None] * n
    most = [0]

    def one(i):
        r = b.request("fastcgi", path="/", query="s=%s" % seconds, timeout=30)
        if r.status == 200:
            pids[i] = json.loads(r.body)["pid"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        most[0] = max(most[0], len(workers(b)))
        time.sleep(0.05)
    return pids, most[0]


def test_max_processes_grows_the_pool_under_load_and_shrinks_it_after(start):
    b = start("grow", "--processes", "1", "--max-processes", "3", "--threads", "1",
              "--inactivity-timeout", "2")
    assert len(workers(b)) == 1
    pids, most = slow_requests(b, 6, 1.5)
    assert None not in pids, "a request failed while the pool grew: %s" % pids
    assert most == 3, "the pool grew to %d workers, want max-processes 3" % most
    assert len(set(pids)) >= 2, "one worker served everything: %s" % pids
    assert "starting one more (max-processes 3)" in b.log_text()
    # Idle extras stop after the inactivity timeout; the configured one stays.
    wait_for(lambda: len(workers(b)) == 1, timeout=15, what="the pool to shrink back to 1 worker")
    # The configured worker is at most replaced (inactivity-timeout gives its
    # memory back), never stopped.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert workers(b), "the last worker of a processes=1 pool was stopped"
        time.sleep(0.05)
    r = b.request("fastcgi", path="/", query="s=0")
    assert r.status == 200


def test_processes_zero_starts_a_worker_on_the_first_connection_and_stops_it_when_idle(start):
    b = start("ondemand", "--processes", "0", "--max-processes", "2", "--threads", "1",
              "--inactivity-timeout", "2", ready=False)
    # Not by connecting: a connection is what starts a worker.
    wait_for(lambda: "listening on" in b.log_text(), timeout=10, what="the master to listen")
    time.sleep(1.0)
    assert workers(b) == [], "a processes=0 pool started a worker before any connection"
    first = b.request("fastcgi", path="/", query="s=0", timeout=20)
    assert first.status == 200
    assert len(workers(b)) == 1
    assert "a connection is waiting; starting a worker" in b.log_text()
    wait_for(lambda: workers(b) == [], timeout=15, what="the idle on-demand worker to stop")
    again = b.request("fastcgi", path="/", query="s=0", timeout=20)
    assert again.status == 200
    assert json.loads(again.body)["pid"] != json.loads(first.body)["pid"]


def test_without_max_processes_the_pool_stays_at_its_size_under_load(start):
    b = start("static", "--processes", "1", "--threads", "1")
    pids, most = slow_requests(b, 3, 0.5)
    assert None not in pids
    assert most == 1 and len(set(pids)) == 1, (most, pids)


def test_a_worker_whose_one_thread_runs_cpu_bound_requests_back_to_back_counts_as_busy(start):
    """Short CPU-bound requests run one after another on one thread of a
    4-thread worker (the GIL is not handed over): its other threads are
    free, yet what arrives waits, so the pool grows all the same."""
    b = start("grow-cpu", "--processes", "1", "--max-processes", "2", "--threads", "4",
              "--inactivity-timeout", "2")
    stop = time.monotonic() + 4
    failed = []
    most = [0]

    def client():
        while time.monotonic() < stop:
            r = b.request("fastcgi", path="/", query="spin=0.002", timeout=30)
            if r.status != 200:
                failed.append(r.status)

    clients = [threading.Thread(target=client) for _ in range(8)]
    for t in clients:
        t.start()
    while any(t.is_alive() for t in clients):
        most[0] = max(most[0], len(workers(b)))
        time.sleep(0.05)
    assert not failed, failed
    assert most[0] == 2, "the pool stayed at %d worker(s) under CPU-bound load" % most[0]
