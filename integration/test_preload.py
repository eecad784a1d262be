"""--preload (SPEC §4, §7): one template process imports the application,
the workers are forked from it and share its memory; observed from outside
by PSS, pids and what each worker reports."""
import json
import os
import re
import signal
import time

import pytest

import harness
from harness import APPS, wait_for

APP = APPS / "preloaded.py"



@pytest.fixture
def start(run_dir):
    started = []

    def _start(name, *args, app=APP, env=None):
        b = harness.WsgiFpm(run_dir, name, app, args, protocols=("fastcgi",), env=env)
        started.append(b)
        b.wait_ready()
        return b

    yield _start
    for b in started:
        b.stop()


def ready_workers(b, n):
    """The pids of the n workers the master reported ready (latest first)."""
    def found():
        pids = [int(p) for p in re.findall(r"worker ready pool=\S+ pid=(\d+)", b.log_text())]
        alive = [p for p in pids if os.path.exists("/proc/%d" % p)]
        return alive if len(alive) >= n else None
    return wait_for(found, 20, "%d ready workers" % n)


def pss_kb(pid):
    text = open("/proc/%d/smaps_rollup" % pid).read()
    return int(re.search(r"^Pss:\s+(\d+) kB", text, re.M).group(1))


def ask(b):
    r = b.request("fastcgi", path="/", timeout=10)
    assert r.status == 200, r
    return json.loads(r.body)


def test_preloaded_workers_share_the_application_memory(start):
    alone = start("single", "--processes", "1", "--threads", "1")
    one = pss_kb(ready_workers(alone, 1)[0])
    assert one > 50 * 1024, "the app's 50 MB are not in the worker (%d kB)" % one
    shared = start("preload", "--processes", "4", "--threads", "1", "--preload")
    pids = ready_workers(shared, 4)
    total = sum(pss_kb(p) for p in pids)
    assert total < 0.5 * 4 * one, "4 preloaded workers: %d kB of PSS; 4 separate ones: %d kB" % (total, 4 * one)


def test_workers_are_forked_from_the_template_and_replaced_from_it(start, run_dir):
    marker = run_dir / "tmp" / "preload-markers"
    marker.mkdir(parents=True, exist_ok=True)
    b = start("forked", "--processes", "2", "--threads", "1", "--preload",
              "--import-script", APPS / "preload_import_script.py",
              env={"PRELOAD_MARKER_DIR": str(marker)})
    pids = ready_workers(b, 2)
    first = ask(b)
    assert first["pid"] in pids and first["imported_by"] not in pids, first
    template = first["imported_by"]
    assert os.path.exists("/proc/%d" % template)
    # Workers are the master's children, whatever forked them.
    for pid in pids:
        ppid = int(open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[1])
        assert ppid == b.pid, "worker %d has parent %d, not the master %d" % (pid, ppid, b.pid)
    # --import-script ran in each forked worker, not in the template.
    ran = set(int(n) for n in os.listdir(marker))
    assert set(pids) <= ran and template not in ran, (pids, ran, template)
    # A killed worker is replaced by a new fork, without importing again.
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: set(ready_workers(b, 2)) - set(pids), 15, "a replacement worker")
    for _ in range(6):
        again = ask(b)
        assert again["imported_by"] == template and again["pid"] != pids[0], again
    assert b.log_text().count("template started") == 1


def test_sighup_reloads_new_code_through_a_new_template(start, run_dir):
    app = run_dir / "tmp" / "preloaded-reload.py"
    app.parent.mkdir(exist_ok=True)
    app.write_text(APP.read_text())
    b = start("reload", "--processes", "2", "--threads", "1", "--preload", app=app)
    old = ask(b)
    assert old["version"] == "v1"
    app.write_text(APP.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
    os.kill(b.pid, signal.SIGHUP)
    new = wait_for(lambda: (lambda r: r if r["version"] == "v2" else None)(ask(b)), 20, "v2 served")
    assert new["imported_by"] != old["imported_by"]
    wait_for(lambda: not os.path.exists("/proc/%d" % old["imported_by"]), 10, "the old template to go")


def test_with_need_app_a_broken_preloaded_app_stops_the_master_with_its_traceback(run_dir, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('preload import failed on purpose')\n")
    b = harness.WsgiFpm(run_dir, "broken", broken, ("--preload", "--need-app"), protocols=("fastcgi",))
    try:
        wait_for(lambda: not b.proc.alive(), 20, "the master to give up")
        log = b.log_text()
        assert "preload import failed on purpose" in log and "Traceback" in log, log
        assert "template failed to start" in log, log
    finally:
        b.stop()


def test_sigkill_of_the_master_leaves_no_template_or_worker(start):
    b = start("orphans", "--processes", "2", "--threads", "1", "--preload")
    pids = ready_workers(b, 2)
    template = ask(b)["imported_by"]
    os.kill(b.pid, signal.SIGKILL)
    wait_for(lambda: not any(os.path.exists("/proc/%d" % p) for p in pids + [template]),
             10, "the template and workers to exit after the master's death")
