"""Pool options (SPEC §4, §5): who workers run as and with what
environment, recycling, allowed clients, several pools from one file."""
import json
import os
import socket
import subprocess
import threading
import time

import pytest

import wire
from harness import APPS, HOST, answer_when_up, free_ports, wsgi_fpm_bin

LIFECYCLE = APPS / "lifecycle.py"
# Root's home (pyenv's Python lives there) is closed to other users; Debian's
# interpreter is the one an unprivileged worker can run.
SYSTEM_PYTHON = "/usr/bin/python3.11"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def ids(b, protocol="fastcgi"):
    r = b.request(protocol, path="/ids")
    assert r.status == 200, r
    return json.loads(r.body)


@needs_root
def test_workers_run_as_the_user_with_its_groups_umask_home_and_environment(spawn):
    b = spawn("ids", LIFECYCLE, "--user", "nobody", "--group", "nogroup", "--umask", "027",
              "--python", SYSTEM_PYTHON, "--home", "/tmp", "--lang", "C.UTF-8", "--locale", "C.UTF-8",
              "--clear-env", "--pass-env", "KEEP_ME",
              env={"KEEP_ME": "kept", "DROP_ME": "dropped"}, protocols=("fastcgi",))
    got = ids(b)
    assert (got["uid"], got["gid"], got["groups"]) == (65534, 65534, [65534]), got
    assert got["umask"] == 0o027
    assert got["cwd"] == "/tmp"
    env = got["env"]
    assert env["HOME"] == "/nonexistent"  # nobody's home, as the password database says
    assert (env["LANG"], env["LC_ALL"], env["KEEP_ME"]) == ("C.UTF-8", "C.UTF-8", "kept")
    assert "DROP_ME" not in env and "PATH" in env
    assert not any(k.startswith("WSGI_FPM_") for k in env), env


def test_without_clear_env_the_environment_is_passed_with_additions(spawn):
    b = spawn("env", LIFECYCLE, "--lang", "C.UTF-8", env={"FROM_OUTSIDE": "yes"}, protocols=("fastcgi",))
    env = ids(b)["env"]
    assert env["FROM_OUTSIDE"] == "yes" and env["LANG"] == "C.UTF-8"


def test_maximum_requests_recycles_workers_without_failing_a_request(spawn):
    b = spawn("maxreq", LIFECYCLE, "--processes", "2", "--threads", "2", "--maximum-requests", "10",
              protocols=("fastcgi",))
    seen, failures = set(), []
    lock = threading.Lock()

    deadline = time.monotonic() + 20
    count = [0]

    def load():
        # Until recycling has been seen (and at least 160 requests made):
        # replacements start at the machine's pace, not the test's.
        while time.monotonic() < deadline and (len(seen) <= 2 or count[0] < 160):
            try:
                r = b.request("fastcgi", path="/pid", timeout=10)
                with lock:
                    count[0] += 1
                    (seen.add(int(r.body)) if r.status == 200 else failures.append(r.status))
            except OSError as e:
                failures.append(repr(e))
            time.sleep(0.01)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:5]
    assert len(seen) > 2, "%d requests at 10 per worker should have recycled workers: %s" % (count[0], seen)
    assert "maximum-requests" in b.log_text()


def test_restart_interval_replaces_a_worker_after_its_lifetime(spawn):
    b = spawn("interval", LIFECYCLE, "--restart-interval", "1", protocols=("fastcgi",))
    first = int(b.request("fastcgi", path="/pid").body)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if int(b.request("fastcgi", path="/pid").body) != first:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the worker was not replaced after its restart interval")
    assert "restart-interval" in b.log_text()


def _request_from(source, addr, timeout=5):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(addr)
    return wire.fcgi_request(addr, wire.cgi_params("GET", "/", protocol="fastcgi"), sock=s, timeout=timeout)


def test_allowed_clients_refuses_other_addresses(run_dir):
    port = free_ports(1)[0]
    log = run_dir / "wsgi-fpm" / "allowed.log"
    log.parent.mkdir(exist_ok=True)
    proc = subprocess.Popen([str(wsgi_fpm_bin()), "--allow-root", "--fastcgi", "%s:%d" % (HOST, port),
                             "--allowed-clients", "127.0.0.2", str(LIFECYCLE)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    addr = (HOST, port)
    try:
        r = answer_when_up(proc, log, lambda: _request_from("127.0.0.2", addr))
        assert r.status == 200 and r.body == b"one"
        with pytest.raises((OSError, ValueError)):
            _request_from("127.0.0.1", addr)
        assert "not in --allowed-clients" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(15)


@needs_root
def test_two_pools_from_one_file_serve_different_apps_on_different_protocols_as_different_users(run_dir):
    fport, uport = free_ports(2)
    conf = run_dir / "tmp" / "two-pools.toml"
    conf.write_text(f'''
[server]
error-log = "-"

[pools.root_app]
app = "{APPS / 'hello.py'}"
listen = ["fastcgi://{HOST}:{fport}"]
processes = 1
threads = 2

[pools.nobody_app]
app = "{LIFECYCLE}"
listen = ["uwsgi://{HOST}:{uport}"]
user = "nobody"
python = "{SYSTEM_PYTHON}"
processes = 2
''')
    log = run_dir / "wsgi-fpm" / "two-pools.log"
    log.parent.mkdir(exist_ok=True)
    proc = subprocess.Popen([str(wsgi_fpm_bin()), "--allow-root", "--config", str(conf)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answer(protocol, port, path):
            return answer_when_up(proc, log, lambda: wire.request(protocol, (HOST, port), path=path, timeout=5))

        assert answer("fastcgi", fport, "/").body == b"Hello, world!"
        nobody = json.loads(answer("uwsgi", uport, "/ids").body)
        assert nobody["uid"] == 65534
        text = log.read_text()
        assert "pool=root_app" in text and "pool=nobody_app" in text
    finally:
        proc.terminate()
        proc.wait(15)


def test_python_home_runs_the_venv_and_python_path_honours_pth_files(spawn, run_dir):
    # A virtual environment made here, with the pool's interpreter (pyenv's,
    # which root may run); --python-home alone selects its bin/python.
    venv = run_dir / "tmp" / "pool-venv"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    extra = run_dir / "tmp" / "site-extra"
    listed = run_dir / "tmp" / "listed-by-pth"
    extra.mkdir(parents=True, exist_ok=True)
    listed.mkdir(parents=True, exist_ok=True)
    (extra / "wsgi_fpm_test.pth").write_text(str(listed) + "\n")
    b = spawn("venv", LIFECYCLE, "--python-home", venv, "--python-path", extra,
              "--home", run_dir / "tmp", protocols=("fastcgi",))
    got = ids(b)
    assert os.path.realpath(got["prefix"]) == os.path.realpath(venv), got["prefix"]
    assert os.path.realpath(got["executable"]).startswith(os.path.realpath(venv)) or \
        got["executable"].startswith(str(venv)), got["executable"]
    assert str(extra) in got["path"], got["path"]
    assert str(listed) in got["path"], "the .pth entry is not on sys.path: %s" % got["path"]
    assert got["cwd"] == str(run_dir / "tmp")


def _policies(pid):
    """The scheduling policy (sched(7)) of each thread of process `pid`."""
    policies = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            stat = f.read()
        # Field 41, counted from field 3, the first after the name's ")".
        policies[int(tid)] = int(stat.rsplit(")", 1)[1].split()[38])
    return policies


@pytest.mark.parametrize("args, master, policy", [
    ((), os.SCHED_OTHER, os.SCHED_OTHER),
    ((), os.SCHED_BATCH, os.SCHED_BATCH),  # unset: as the master was started
    (("--cpu-scheduling", "batch"), os.SCHED_OTHER, os.SCHED_BATCH),
    (("--cpu-scheduling", "batch", "--preload"), os.SCHED_OTHER, os.SCHED_BATCH),  # forked by the template
    (("--cpu-scheduling", "normal"), os.SCHED_BATCH, os.SCHED_OTHER),
], ids=["default", "default-under-batch", "batch", "batch-preload", "normal-under-batch"])
def test_every_thread_of_a_worker_runs_with_the_cpu_scheduling_policy_and_the_master_keeps_its_own(
        spawn, args, master, policy):
    # The master inherits this thread's policy, as from systemd's
    # CPUSchedulingPolicy=.
    before = os.sched_getscheduler(0)
    os.sched_setscheduler(0, master, os.sched_param(0))
    try:
        b = spawn("sched", LIFECYCLE, "--threads", "3", *args, protocols=("fastcgi",))
    finally:
        os.sched_setscheduler(0, before, os.sched_param(0))
    r = b.request("fastcgi", path="/pid")
    assert r.status == 200, r
    worker = int(r.body)
    threads = _policies(worker)
    assert len(threads) >= 4, threads  # 3 Python threads and the I/O thread at least
    assert set(threads.values()) == {policy}, threads
    assert set(_policies(b.pid).values()) == {master}
    with open(b.log, errors="replace") as f:
        assert "cpu-scheduling is" not in f.read()
