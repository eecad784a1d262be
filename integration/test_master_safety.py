"""The master against what a tenant's application, a planted link or an odd
environment can do (issue: security review of the master), observed from
outside: which processes live, what files hold, which descriptors a worker
has, the master's memory and how fast it answers signals.

1. a --preload template that reports another process's pid (or 0,
   4294967295, the master's own): nothing is signalled, the log says so;
2. a pool's interpreter never runs as root (it is the pool's file);
3. a worker flooding its status pipe does not grow the master; a template
   that never answers does not hold up signals or the other pools;
4. --pid-file, --error-log (also on SIGUSR1) and Unix sockets refuse a
   planted symbolic link;
5. a worker holds only its own pool's inherited sockets;
6. no flag, key or environment variable panics the master;
7. SIGUSR2 stops nothing, SIGUSR1 spares loading workers, SIGTTIN is capped.
"""
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

import harness
import wire
from harness import APPS, HOST, free_ports, tail, wait_for

PROBE = APPS / "lifecycle_probe.py"
LIFECYCLE = APPS / "lifecycle.py"
FORGING = APPS / "forging_template.py"
SYSTEM_PYTHON = "/usr/bin/python3.11"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


# ------------------------------------------------------------------ helpers

@pytest.fixture
def launch(run_dir):
    """launch(name, app, *args, ready=True, env=None, error_log="-") → a
    wsgi-fpm on one FastCGI port, stopped after the test."""
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
def outside():
    """An empty directory under /tmp that every user may enter (the run dir
    may sit below a home closed to nobody; a socket path must be short)."""
    d = Path("/tmp") / ("wsgi-fpm-safety-%d" % os.getpid())
    subprocess.run(["rm", "-rf", str(d)], check=False)
    d.mkdir()
    os.chmod(d, 0o777)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.fixture
def scratch(run_dir, request):
    name = re.sub(r"[^\w.-]", "-", request.node.name)
    d = Path(run_dir) / "tmp" / ("safety-" + name)
    subprocess.run(["rm", "-rf", str(d)], check=False)
    d.mkdir(parents=True)
    return d


class Master:
    """A wsgi-fpm started by hand (a config file, odd fds or environment)."""

    def __init__(self, run_dir, name, args, env=None, **popen):
        self.log = Path(run_dir) / "wsgi-fpm" / (name + ".log")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(harness.wsgi_fpm_bin()), "--allow-root", *map(str, args)]
        penv = dict(os.environ)
        penv.update(env or {})
        with open(self.log, "ab") as f:
            f.write(("$ %s\n" % " ".join(cmd)).encode())
            self.popen = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=penv,
                                          start_new_session=True, **popen)
        self.pid = self.popen.pid

    def text(self):
        return self.log.read_text(errors="replace")

    def ask(self, protocol, port, path="/", timeout=20):
        return harness.answer_when_up(
            self.popen, self.log,
            lambda: wire.request(protocol, (HOST, port), path=path, timeout=5), timeout=timeout)

    def descendants(self):
        return harness.Proc.descendants(self)

    def stop(self):
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def master(run_dir):
    started = []

    def _master(name, args, **kw):
        m = Master(run_dir, name, args, **kw)
        started.append(m)
        return m

    yield _master
    for m in started:
        m.stop()


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def rss_kb(pid):
    text = Path("/proc/%d/status" % pid).read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1))


def pid_answer(b, timeout=5):
    try:
        r = b.request("fastcgi", path="/pid", timeout=timeout)
    except (OSError, ValueError):
        return None
    return int(r.body) if r.status == 200 else None


def canary_process():
    """A process the master must never signal: this test's own child."""
    return subprocess.Popen(["sleep", "600"], start_new_session=True)


# ------------------------------------------------------------------ 1. forged pids

def test_a_template_reporting_another_processs_pid_never_gets_it_signalled(launch, scratch):
    canary = canary_process()
    try:
        b = launch("forged-canary", FORGING, "--preload", "--processes", "1", "--threads", "1",
                   "--startup-timeout", "2", ready=False,
                   env={"FORGE_MODE": "forge", "FORGE_PIDS": str(canary.pid),
                        "FORGE_STATE": str(scratch / "state")})
        wait_for(lambda: b.log_text().count("refusing to adopt or signal it") >= 2, timeout=20,
                 what="two forged answers refused")
        # Longer than the startup timeout a held worker would get.
        time.sleep(3)
        os.kill(b.pid, signal.SIGTERM)
        b.proc.popen.wait(15)
        assert alive(canary.pid), "the master signalled a process it never forked:\n%s" % tail(b.log)
        log = b.log_text()
        assert re.search(r"the template answered pid %d for a new worker, but its parent is \d+, "
                         r"not this master: refusing to adopt or signal it" % canary.pid, log), tail(b.log)
        assert "panicked" not in log
    finally:
        canary.kill()
        canary.wait()


@pytest.mark.parametrize("forged,reason", [
    ("4294967295", "it answered pid 4294967295, which no forked worker can have"),
    ("0", "it answered pid 0, which no forked worker can have"),
    ("MASTER", "the master's own"),
])
def test_a_template_reporting_an_impossible_pid_is_refused(launch, scratch, forged, reason):
    canary = canary_process()
    try:
        b = launch("forged-" + forged.lower(), FORGING, "--preload", "--processes", "1",
                   "--threads", "1", ready=False,
                   env={"FORGE_MODE": "forge", "FORGE_PIDS": forged,
                        "FORGE_STATE": str(scratch / "state")})
        wait_for(lambda: reason in b.log_text(), timeout=20, what="the forged pid refused")
        assert "replacing the template" in b.log_text()
        time.sleep(1)
        assert b.proc.alive(), tail(b.log)
        os.kill(b.pid, signal.SIGTERM)
        b.proc.popen.wait(15)
        assert b.proc.popen.returncode == 0, tail(b.log)
        assert alive(canary.pid)
    finally:
        canary.kill()
        canary.wait()


# ------------------------------------------------------------------ 2. the interpreter as root

def _recording_python(d):
    """A --python wrapper in `d` that appends the uid it runs as to a
    record, then runs the system interpreter; both usable by nobody."""
    record = d / "uids"
    record.write_text("")
    os.chmod(record, 0o666)
    wrapper = d / "python"
    wrapper.write_text('#!/bin/sh\nid -u >> %s\nexec %s "$@"\n' % (record, SYSTEM_PYTHON))
    os.chmod(wrapper, 0o755)
    return wrapper, record


@needs_root
def test_a_pools_interpreter_never_runs_as_root(master, scratch, outside):
    wrapper, record = _recording_python(outside)
    port = free_ports(1)[0]
    conf = scratch / "pool.toml"
    conf.write_text('[pools.tenant]\napp = "%s"\nlisten = ["fastcgi://%s:%d"]\nuser = "nobody"\n'
                    'python = "%s"\nprocesses = 1\nthreads = 1\n' % (LIFECYCLE, HOST, port, wrapper))
    check = subprocess.run([str(harness.wsgi_fpm_bin()), "--allow-root", "--config", str(conf), "--check"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    m = master("interp-as-nobody", ["--config", conf])
    assert m.ask("fastcgi", port, "/ids").status == 200
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: "new generation ready" in m.text(), timeout=20, what="the reload")
    uids = record.read_text().split()
    assert uids and set(uids) == {"65534"}, "the pool's interpreter ran as %s" % uids


# ------------------------------------------------------------------ 3. bounded messages, no blocking

def test_a_worker_flooding_its_status_pipe_does_not_grow_the_master(launch):
    b = launch("flood", PROBE, "--processes", "1", "--threads", "2")
    worker = pid_answer(b)
    time.sleep(0.5)
    before = rss_kb(b.pid)
    assert int(b.request("fastcgi", path="/flood", query="mb=256", timeout=10).body) == worker
    wait_for(lambda: b.request("fastcgi", path="/flooded", timeout=10).body == b"yes", timeout=60,
             every=0.2, what="256 MiB written to the status pipe")
    grown = rss_kb(b.pid) - before
    assert grown < 20 * 1024, "the master grew by %d kB reading a flooding worker" % grown
    assert b.log_text().count("status message longer than 4096 bytes") == 1, tail(b.log)
    assert pid_answer(b) == worker, "the worker still serves, and was not replaced"


def _two_pool_config(scratch, first, second):
    conf = scratch / "pools.toml"
    conf.write_text(first + "\n" + second)
    return conf


def test_a_template_that_never_answers_does_not_hold_up_signals_or_other_pools(master, scratch):
    silent_port, port = free_ports(2)
    conf = _two_pool_config(
        scratch,
        '[pools.silent]\napp = "%s"\nlisten = ["fastcgi://%s:%d"]\npreload = true\nprocesses = 1\n'
        'threads = 1\nenv = { FORGE_MODE = "silent" }\n' % (FORGING, HOST, silent_port),
        '[pools.fine]\napp = "%s"\nlisten = ["fastcgi://%s:%d"]\nprocesses = 1\nthreads = 2\n'
        % (LIFECYCLE, HOST, port))
    m = master("silent-template", ["--config", conf])
    assert m.ask("fastcgi", port, "/").body == b"one"
    wait_for(lambda: "template loaded the application; forking workers" in m.text(), timeout=20,
             what="the template to be asked for a worker")
    time.sleep(0.5)  # the fork command is out, the answer never comes
    fine_workers = lambda: [p for p in m.descendants() if _comm(p) == "wsgi-fpm:fine"]
    assert len(fine_workers()) == 1
    sent = time.monotonic()
    os.kill(m.pid, signal.SIGTTIN)
    wait_for(lambda: "SIGTTIN" in m.text(), timeout=2, what="SIGTTIN handled at once")
    wait_for(lambda: len(fine_workers()) == 2, timeout=5, what="one more worker in the other pool")
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: "SIGHUP: starting a new generation" in m.text(), timeout=5,
             what="SIGHUP handled while the template is silent")
    for _ in range(5):
        started = time.monotonic()
        r = wire.request("fastcgi", (HOST, port), path="/", timeout=5)
        assert r.status == 200 and time.monotonic() - started < 2
    assert time.monotonic() - sent < 9, "everything above waited for the template"


def _comm(pid):
    try:
        return Path("/proc/%d/comm" % pid).read_text().strip()
    except OSError:
        return None


# ------------------------------------------------------------------ 4. planted links

def _canary(scratch):
    canary = scratch / "canary"
    canary.write_text("precious\n")
    os.chmod(canary, 0o600)
    return canary


def _unchanged(canary):
    st = canary.stat()
    return (canary.read_text() == "precious\n" and stat.S_IMODE(st.st_mode) == 0o600
            and st.st_uid == os.geteuid())


def test_a_pid_file_that_is_a_link_is_refused_and_its_target_untouched(scratch):
    canary = _canary(scratch)
    link = scratch / "wsgi-fpm.pid"
    link.symlink_to(canary)
    r = subprocess.run([str(harness.wsgi_fpm_bin()), "--allow-root", "--pid-file", str(link),
                        "--fastcgi", "%s:%d" % (HOST, free_ports(1)[0]), str(LIFECYCLE)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stderr
    assert "pid-file %s: %s is a symbolic link; refusing to follow it" % (link, link) in r.stderr, r.stderr
    assert _unchanged(canary)


def test_an_error_log_that_is_a_link_is_refused_and_its_target_untouched(scratch):
    canary = _canary(scratch)
    link = scratch / "error.log"
    link.symlink_to(canary)
    r = subprocess.run([str(harness.wsgi_fpm_bin()), "--allow-root", "--error-log", str(link),
                        "--fastcgi", "%s:%d" % (HOST, free_ports(1)[0]), str(LIFECYCLE)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "error-log %s: %s is a symbolic link; refusing to follow it" % (link, link) in r.stderr, r.stderr
    assert _unchanged(canary)


def test_sigusr1_does_not_reopen_the_error_log_through_a_planted_link(launch, scratch):
    canary = _canary(scratch)
    log = scratch / "error.log"
    b = launch("usr1-link", PROBE, "--processes", "1", "--threads", "2", error_log=log)
    # Rotated away, and a link planted in its place.
    log.rename(scratch / "error.log.1")
    log.symlink_to(canary)
    os.kill(b.pid, signal.SIGUSR1)
    old = scratch / "error.log.1"
    wait_for(lambda: "cannot reopen the error log" in old.read_text(), timeout=10,
             what="the refusal in the log still open")
    assert "%s is a symbolic link; refusing to follow it" % log in old.read_text()
    assert pid_answer(b) is not None, "still serving"
    time.sleep(0.5)
    assert _unchanged(canary)


def test_a_unix_socket_path_that_is_a_link_is_refused_and_its_target_untouched(scratch):
    canary = _canary(scratch)
    link = scratch / "app.sock"
    link.symlink_to(canary)
    r = subprocess.run([str(harness.wsgi_fpm_bin()), "--allow-root", "--fastcgi", "unix:%s" % link,
                        "--socket-mode", "0666", "--socket-user", "nobody", str(LIFECYCLE)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stderr
    assert "%s exists and is not a socket" % link in r.stderr, r.stderr
    assert _unchanged(canary)


@needs_root
def test_a_unix_socket_gets_its_mode_and_owner(master, outside):
    # A short path: sun_path holds 108 bytes.
    path = outside / "app.sock"
    m = master("socket-access", ["--fastcgi", "unix:%s" % path, "--socket-mode", "0660",
                                 "--socket-user", "nobody", LIFECYCLE])
    wait_for(lambda: path.exists(), timeout=10, what="the socket")
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_uid == 65534
    assert m.popen.poll() is None, m.text()


# ------------------------------------------------------------------ 5. descriptors of other pools

def _socket_inodes(pid):
    out = set()
    for name in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, name))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def test_a_worker_holds_only_its_own_pools_inherited_sockets(run_dir, scratch):
    a, b = socket.socket(), socket.socket()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, 0))
        s.listen(16)
    conf = scratch / "fds.toml"
    conf.write_text('[pools.a]\napp = "%s"\nlisten = ["fastcgi://fd:3"]\n'
                    '[pools.b]\napp = "%s"\nlisten = ["fastcgi://fd:4"]\n' % (LIFECYCLE, LIFECYCLE))

    def place_sockets():
        spare = [os.dup(a.fileno()), os.dup(b.fileno())]
        for target, fd in zip((3, 4), spare):
            os.dup2(fd, target)

    log = Path(run_dir) / "wsgi-fpm" / "fd-pools.log"
    cmd = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=2 exec "$@"', "sh", str(harness.wsgi_fpm_bin()),
           "--allow-root", "--config", str(conf)]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            preexec_fn=place_sockets, pass_fds=(3, 4), start_new_session=True)
    try:
        for s in (a, b):
            r = harness.answer_when_up(proc, log, lambda: wire.request("fastcgi", s.getsockname(),
                                                                       path="/pid", timeout=5))
            assert r.status == 200
        inode_a, inode_b = os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino
        by_pool = {}
        for pid in harness.Proc.descendants(proc):
            by_pool.setdefault(_comm(pid), []).append(pid)
        assert by_pool.get("wsgi-fpm:a") and by_pool.get("wsgi-fpm:b"), by_pool
        for pid in by_pool["wsgi-fpm:b"]:
            held = _socket_inodes(pid)
            assert inode_b in held and inode_a not in held, "pool b's worker %d holds pool a's socket" % pid
        for pid in by_pool["wsgi-fpm:a"]:
            held = _socket_inodes(pid)
            assert inode_a in held and inode_b not in held, "pool a's worker %d holds pool b's socket" % pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        a.close()
        b.close()


# ------------------------------------------------------------------ 6. no panic

@pytest.mark.parametrize("option", ["--socket-timeout", "--shutdown-timeout", "--graceful-timeout",
                                    "--startup-timeout", "--restart-interval"])
def test_a_huge_duration_on_the_command_line_is_refused_without_a_panic(option):
    r = subprocess.run([str(harness.wsgi_fpm_bin()), "--allow-root", option, "1e20",
                        "--fastcgi", "%s:%d" % (HOST, free_ports(1)[0]), str(LIFECYCLE)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "%s: must be at most 10000000 seconds" % option in r.stderr, r.stderr
    assert "panicked" not in r.stderr


def test_a_huge_duration_in_the_file_is_refused_with_the_file_and_key(scratch):
    conf = scratch / "huge.toml"
    conf.write_text('[pools.p]\napp = "%s"\nlisten = ["fastcgi://%s:%d"]\nshutdown-timeout = 1e20\n'
                    % (LIFECYCLE, HOST, free_ports(1)[0]))
    r = subprocess.run([str(harness.wsgi_fpm_bin()), "--allow-root", "--config", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "%s: pools.p.shutdown-timeout: must be at most 10000000 seconds" % conf in r.stderr, r.stderr
    assert "panicked" not in r.stderr


def test_an_environment_variable_that_is_not_utf8_reaches_the_workers_without_a_panic(run_dir):
    port = free_ports(1)[0]
    log = Path(run_dir) / "wsgi-fpm" / "odd-env.log"
    env = {k.encode(): v.encode() for k, v in os.environ.items()}
    env[b"WSGI_FPM_TEST_ODD"] = b"caf\xe9 \xff"
    proc = subprocess.Popen([str(harness.wsgi_fpm_bin()), "--allow-root", "--fastcgi",
                             "%s:%d" % (HOST, port), "--python-path", str(APPS), str(LIFECYCLE)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        r = harness.answer_when_up(proc, log, lambda: wire.request("fastcgi", (HOST, port), path="/ids",
                                                                   timeout=5))
        assert r.status == 200
        got = json.loads(r.body)["env"]["WSGI_FPM_TEST_ODD"]
        assert got.encode("utf-8", "surrogateescape") == b"caf\xe9 \xff"
        assert "panicked" not in log.read_text(errors="replace")
    finally:
        proc.terminate()
        proc.wait(15)


# ------------------------------------------------------------------ 7. signals

def test_sigusr2_stops_neither_the_master_nor_its_workers(launch):
    b = launch("usr2", PROBE, "--processes", "2", "--threads", "2")
    workers = set(wait_for(lambda: len(b.proc.descendants()) == 2 and b.proc.descendants(),
                           what="2 workers"))
    wait_for(lambda: b.log_text().count("worker ready") == 2, what="both ready")
    for _ in range(3):
        os.kill(b.pid, signal.SIGUSR2)
        time.sleep(0.3)
    time.sleep(1)
    assert b.proc.alive(), tail(b.log)
    assert set(b.proc.descendants()) == workers, "a worker died of SIGUSR2"
    assert pid_answer(b) in workers
    assert "SIGUSR2" in b.log_text()


def test_sigusr1_during_a_slow_import_does_not_kill_the_loading_worker(launch, scratch):
    flag = scratch / "slow"
    flag.write_text("3")
    b = launch("usr1-loading", PROBE, "--processes", "1", "--threads", "2", ready=False,
               env={"PROBE_SLOW_FLAG": str(flag)})
    # The worker names itself before it imports the application.
    loading = wait_for(lambda: [p for p in b.proc.descendants() if _comm(p) == "wsgi-fpm:main"],
                       timeout=10, what="the loading worker")[0]
    wait_for(lambda: not flag.exists(), timeout=10, what="the import to start sleeping")
    os.kill(b.pid, signal.SIGUSR1)
    b.wait_ready(timeout=20)
    assert pid_answer(b) == loading, "the loading worker was killed by SIGUSR1:\n%s" % tail(b.log)
    assert "worker exited" not in b.log_text()


def test_sigttin_grows_a_dynamic_pool_no_further_than_max_processes(launch):
    b = launch("ttin-dynamic", PROBE, "--processes", "1", "--max-processes", "2", "--threads", "1")
    for _ in range(50):
        os.kill(b.pid, signal.SIGTTIN)
        time.sleep(0.01)
    wait_for(lambda: b.log_text().count("SIGTTIN: one more worker") == 50, timeout=10,
             what="every SIGTTIN handled")
    time.sleep(2)
    assert len(b.proc.descendants()) == 2, b.proc.descendants()
    assert "its most (max-processes)" in b.log_text()


def test_sigttin_grows_a_static_pool_to_twice_its_processes_at_most(launch):
    b = launch("ttin-static", PROBE, "--processes", "2", "--threads", "1")
    for _ in range(10):
        os.kill(b.pid, signal.SIGTTIN)
        time.sleep(0.05)
    wait_for(lambda: len(b.proc.descendants()) == 4, timeout=15, what="4 workers")
    time.sleep(2)
    assert len(b.proc.descendants()) == 4, b.proc.descendants()
    assert "its most (twice its processes)" in b.log_text()
