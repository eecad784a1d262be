"""Process and port plumbing shared by bench/run and bench/count.

Every process started here leads its own session, so that it and whatever it
forks are stopped together by its process-group id; every wait is bounded;
everything listens on 127.0.0.1 or on Unix sockets in a private directory.
"""
import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
APPS = BENCH / "apps"
LIB = BENCH / "lib"
HOST = "127.0.0.1"

#: How long a server may take from start to its first correct answer.
START_TIMEOUT = 30.0
#: How long a process gets to exit after its stop signal before SIGKILL.
STOP_TIMEOUT = 10.0


def say(*parts, file=sys.stderr):
    print(*parts, file=file, flush=True)


def wsgi_fpm_bin():
    """The binary under test: $WSGI_FPM_BIN, else target/release/wsgi-fpm of this checkout."""
    path = Path(os.environ.get("WSGI_FPM_BIN", "target/release/wsgi-fpm"))
    return path if path.is_absolute() else ROOT / path


def is_root():
    return os.geteuid() == 0


def tool(name):
    """Full path of a program on PATH or in /usr/sbin (nginx, apache2), else None."""
    return shutil.which(name) or next((p for p in ("/usr/sbin/" + name, "/sbin/" + name)
                                       if os.access(p, os.X_OK)), None)


# ------------------------------------------------------------------ ports

_given = set()


def free_ports(n):
    """`n` distinct TCP ports free on 127.0.0.1, taken below the kernel's
    ephemeral range so that no outgoing connection (and many are opened per
    second here) can be holding one when a server restarts on it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    lo, hi = max(10000, low - 12000), max(11000, low - 1)
    out = []
    port = random.randrange(lo, hi)
    for _ in range(hi - lo):
        port = lo if port + 1 >= hi else port + 1
        if port in _given:
            continue
        s = socket.socket()
        try:
            s.bind((HOST, port))
        except OSError:
            continue
        finally:
            s.close()
        _given.add(port)
        out.append(port)
        if len(out) == n:
            return out
    raise RuntimeError("no free TCP ports in %d-%d" % (lo, hi))


def wait_port(port, deadline, proc=None):
    """True once something accepts connections on 127.0.0.1:port."""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            return False
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# ------------------------------------------------------------------ processes

def _stat_fields(pid):
    """Fields after the command name of /proc/PID/stat (field 3 onwards)."""
    return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()


def children_map():
    """ppid -> [pid] for every live process."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int(_stat_fields(int(d.name))[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(d.name))
    return out


def tree(pid):
    """`pid` and every live process below it."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return [p for p in out if Path("/proc/%d" % p).exists()]


def cmdline(pid):
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def threads(pid):
    """[(tid, name)] of a live process, in tid order."""
    out = []
    try:
        tasks = list(Path("/proc/%d/task" % pid).iterdir())
    except OSError:
        return out
    for t in tasks:
        try:
            out.append((int(t.name), (t / "comm").read_text().strip()))
        except (OSError, ValueError):
            pass
    return sorted(out)


def cpu_seconds(pids):
    """{pid: user plus system CPU seconds used so far, every thread of it},
    from /proc/PID/stat (a process already gone is left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            stat = Path("/proc/%d/stat" % pid).read_text()
        except OSError:
            continue
        # The fields after the command name, which may hold spaces: utime
        # and stime are the 12th and 13th.
        fields = stat[stat.rindex(")") + 2:].split()
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_used(before, after):
    """CPU seconds used between two `cpu_seconds` readings: a process that
    started meanwhile counts whole, one that ended meanwhile is lost (a
    worker replaced during a timed run is rare and logged by its server)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def memory(pids):
    """(RSS, PSS) in bytes summed over `pids`, from /proc/PID/smaps_rollup
    (PSS splits shared pages between the processes that map them, so it
    does not count a forked worker's inherited memory twice)."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path("/proc/%d/smaps_rollup" % pid).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0] == "Rss:":
                rss += int(parts[1]) * 1024
            elif parts and parts[0] == "Pss:":
                pss += int(parts[1]) * 1024
    return rss, pss


_live = set()


def stop_all():
    """Stops every Proc still running: for an interrupted run (atexit, SIGTERM)."""
    for p in list(_live):
        p.stop(timeout=3)


def exit_on_sigterm():
    """SIGTERM (from timeout(1), say) unwinds like an exception, so that
    finally blocks and atexit stop what was started."""
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class Proc:
    """A child process in its own session, its output appended to `log`."""

    def __init__(self, name, cmd, log, cwd=None, env=None, stop_signal=signal.SIGTERM):
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.stop_signal = stop_signal
        with open(self.log, "ab") as f:
            f.write(("$ %s\n" % " ".join(self.cmd)).encode())
            f.flush()
            self.popen = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=f,
                                          stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                          start_new_session=True)
        self.pid = self.popen.pid
        _live.add(self)

    def alive(self):
        return self.popen.poll() is None

    def pids(self):
        return tree(self.pid) if self.alive() else []

    def stop(self, timeout=STOP_TIMEOUT):
        """The stop signal, then SIGKILL to whatever is left of the group."""
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
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
        _live.discard(self)


def tail(path, lines=15):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return "(%s)" % e
    return "\n".join(text.splitlines()[-lines:])
