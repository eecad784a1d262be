"""Process plumbing for the end-to-end tests: free loopback ports, wsgi-fpm
instances, real nginx / Apache httpd / lighttpd started in the foreground from
the templates in conf/, and a counting TCP relay.

Every wait here is bounded; everything listens on 127.0.0.1 only; every
process started here is stopped by its own id (its process group, which it
leads because it is started in a new session).
"""
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import wire

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION = ROOT / "integration"
WORK = INTEGRATION / "work"
APPS = ROOT / "tests" / "apps"
CONF = ROOT / "conf"
EXAMPLES = ROOT / "examples"
HOST = "127.0.0.1"

#: How long a wsgi-fpm instance may take to answer its first request.
BACKEND_START_TIMEOUT = 20.0
#: How long a front end may take to listen on all its ports.
FRONTEND_START_TIMEOUT = 15.0
# A front end that could not bind a port is started on other ones, this
# many times in all; what nginx, Apache httpd and lighttpd log then.
BIND_ATTEMPTS = 3
BIND_FAILED = "Address already in use"
#: How long a process gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 10.0


def wsgi_fpm_bin():
    path = Path(os.environ.get("WSGI_FPM_BIN", "target/release/wsgi-fpm"))
    return path if path.is_absolute() else ROOT / path


# ------------------------------------------------------------------ ports

_given_ports = set()
_ports_lock = threading.Lock()


def _ephemeral_range():
    """The kernel's ephemeral (client) ports, first and last."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first, last = map(int, f.read().split()[:2])
            return first, last
    except (OSError, ValueError):
        return 32768, 60999


def _listening_window(n, span):
    """Up to `span` ports just below the kernel's ephemeral range or just
    above it, whichever has more room (None if neither has `n`). A port
    handed out for a server to bind later should come from here: a port in
    the ephemeral range can be taken meanwhile by any client connection (a
    front end's to its backend, a test's own), and the server then fails
    with "Address already in use"."""
    first, last = _ephemeral_range()
    windows = [(max(1024, first - span), first), (last + 1, min(65536, last + 1 + span))]
    low, high = max(windows, key=lambda w: w[1] - w[0])
    return (low, high) if high - low >= n else None


def _bindable(ports):
    socks = []
    try:
        for p in ports:
            s = socket.socket()
            socks.append(s)
            s.bind((HOST, p))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def _ephemeral_ports(n):
    """`n` ports the kernel picks (bind to port 0): where the ephemeral
    range leaves no room outside it."""
    out = []
    socks = []
    try:
        while len(out) < n:
            s = socket.socket()
            socks.append(s)
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            if port not in _given_ports:
                _given_ports.add(port)
                out.append(port)
    finally:
        for s in socks:
            s.close()
    return out


def free_ports(n, span=20000):
    """`n` distinct free TCP ports on 127.0.0.1, outside the ephemeral range
    where it leaves room (see `_listening_window`), never handed out twice
    in this run."""
    window = _listening_window(n, span)
    with _ports_lock:
        if window is None:
            return _ephemeral_ports(n)
        low, high = window
        out = []
        for _ in range(200 * n):
            port = random.randrange(low, high)
            if port in _given_ports or not _bindable([port]):
                continue
            _given_ports.add(port)
            out.append(port)
            if len(out) == n:
                return out
    raise RuntimeError("no %d free ports between %d and %d" % (n, low, high))


def free_port_run(n, span=12000):
    """A first port of `n` consecutive free TCP ports on 127.0.0.1 (for
    `wsgi-fpm migrate --listen-base`, which counts up from it), outside the
    ephemeral range; never handed out twice in this run."""
    window = _listening_window(n, span)
    if window is None:
        raise RuntimeError("no room for %d consecutive ports outside the ephemeral range %d-%d"
                           % ((n,) + _ephemeral_range()))
    low, high = window
    with _ports_lock:
        for _ in range(200):
            base = random.randrange(low, high - n + 1)
            run = range(base, base + n)
            if any(p in _given_ports for p in run) or not _bindable(run):
                continue
            _given_ports.update(run)
            return base
    raise RuntimeError("no %d consecutive free ports between %d and %d" % (n, low, high))


def wait_port(port, deadline, alive=None):
    """Whether something listens on `port` before `deadline`; gives up
    early once `alive()` says the process that should has gone."""
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return True
        except OSError:
            if alive is not None and not alive():
                return False
            time.sleep(0.05)
    return False


# ------------------------------------------------------------------ run dir

def _start_time(pid):
    """Field 22 of /proc/PID/stat: tells a process from a later one with the same pid."""
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def reap_leftovers(run):
    """Stop what an earlier run started and could not stop (its pytest was
    killed): the process groups recorded in its `pids` file, each only if
    the same process (same pid and start time) still leads it."""
    try:
        lines = (Path(run) / "pids").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        try:
            pid, started = line.split()[:2]
            pid = int(pid)
        except ValueError:
            continue
        if _start_time(pid) == started:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    # The front ends' temp dirs, still linked from the run dir.
    for link in Path(run).glob("*"):
        kind = link.name.split("-")[0]
        if kind in FRONTENDS and link.is_symlink():
            target = Path(os.readlink(link)).parent
            if target.name.startswith("wsgi-fpm-%s-" % kind) and target.parent == Path(tempfile.gettempdir()):
                shutil.rmtree(target, ignore_errors=True)


def _run_is_live(run):
    """A run dir is named run-<stamp>-<pytest pid>: a pytest still running
    (another suite on this machine) keeps its processes."""
    try:
        pid = int(run.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        cmdline = Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return False
    return b"pytest" in cmdline


def new_run_dir():
    """integration/work/run-<stamp>; keeps the three newest runs, `latest` links to this one."""
    WORK.mkdir(parents=True, exist_ok=True)
    runs = sorted(p for p in WORK.glob("run-*") if p.is_dir())
    for run in runs:
        if not _run_is_live(run):
            reap_leftovers(run)
    for old in runs[:-2]:
        if not _run_is_live(old):
            shutil.rmtree(old, ignore_errors=True)
    d = WORK / ("run-%s-%d" % (time.strftime("%Y%m%d-%H%M%S"), os.getpid()))
    d.mkdir()
    latest = WORK / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(d.name)
    except OSError:
        pass
    return d


def _size(path):
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _read_from(path, offset):
    """A log's text from byte `offset` on ("" if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def tail(path, lines=30):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return "(%s)" % e
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------ processes

class Proc:
    """A child process in its own session, output to a log file."""

    def __init__(self, name, cmd, log, cwd=None, env=None, pids_file=None):
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as f:
            f.write(("$ %s\n" % " ".join(self.cmd)).encode())
            f.flush()
            self.popen = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=f,
                                          stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                          start_new_session=True)
        self.pid = self.popen.pid
        if pids_file:
            with open(pids_file, "a") as f:
                f.write("%d %s %s\n" % (self.pid, _start_time(self.pid), name))

    def alive(self):
        return self.popen.poll() is None

    def stop(self, sig=signal.SIGTERM):
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group it leads (workers, Apache children).
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def descendants(self):
        """Pids of every live process below this one (from /proc)."""
        children = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d.name))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            for c in children.get(p, []):
                out.append(c)
                todo.append(c)
        return out


def answer_when_up(popen, log, ask, timeout=20.0):
    """Retries ask() until it returns without OSError, for a wsgi-fpm the
    test started itself; fails at once, with the log, if it exited."""
    deadline = time.monotonic() + timeout
    while True:
        assert popen.poll() is None, "wsgi-fpm exited: %s" % tail(log)
        try:
            return ask()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class StartError(RuntimeError):
    pass


class WsgiFpm:
    """One wsgi-fpm instance listening on one port per protocol."""

    def __init__(self, run_dir, name, app, args=(), protocols=("fastcgi", "scgi", "uwsgi"),
                 python_path=(), env=None, ports=None, error_log="-"):
        self.name = name
        self.app = str(app)
        if ports:
            self.ports = dict(ports)
            self.protocols = tuple(ports)
        else:
            self.protocols = tuple(protocols)
            self.ports = dict(zip(self.protocols, free_ports(len(self.protocols))))
        self.log = Path(run_dir) / "wsgi-fpm" / (name + ".log")
        binary = wsgi_fpm_bin()
        if not os.access(binary, os.X_OK):
            raise StartError("no wsgi-fpm binary at %s: build it (cargo build --release) or set WSGI_FPM_BIN" % binary)
        cmd = [binary]
        for proto, port in self.ports.items():
            cmd += ["--" + proto, "%s:%d" % (HOST, port)]
        for p in (APPS,) + tuple(python_path):
            cmd += ["--python-path", p]
        cmd += ["--allow-root", "--error-log", str(error_log)]
        cmd += [str(a) for a in args]
        cmd.append(self.app)
        penv = dict(os.environ)
        penv["WSGI_FPM_TEST_TMP"] = str(Path(run_dir) / "tmp")
        (Path(run_dir) / "tmp").mkdir(exist_ok=True)
        penv.update(env or {})
        self.proc = Proc(name, cmd, self.log, cwd=ROOT, env=penv, pids_file=Path(run_dir) / "pids")
        self.pid = self.proc.pid

    def addr(self, protocol):
        return (HOST, self.ports[protocol])

    def wait_ready(self, timeout=BACKEND_START_TIMEOUT):
        """Retry a real request on the first listener until it answers."""
        proto = self.protocols[0]
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise StartError("wsgi-fpm %s exited with %s before answering; log %s:\n%s" % (
                    self.name, self.proc.popen.returncode, self.log, tail(self.log)))
            try:
                wire.request(proto, self.addr(proto), path="/__ready__", timeout=5)
                return self
            except (OSError, ValueError) as e:
                last = e
                time.sleep(0.2)
        raise StartError("wsgi-fpm %s did not answer a %s request within %.0f s (last: %r); log %s:\n%s" % (
            self.name, proto, timeout, last, self.log, tail(self.log)))

    def request(self, protocol, *args, **kw):
        return wire.request(protocol, self.addr(protocol), *args, **kw)

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        self.proc.stop()


# ------------------------------------------------------------------ relay

class Relay:
    """A TCP relay that counts the connections a front end opens to a backend.

    Used for the FastCGI keep-connection front ends: if the backend honours
    FCGI_KEEP_CONN, many requests travel over few connections. When either
    side closes or fails, both sockets are closed (front ends never half-close
    a FastCGI connection).
    """

    def __init__(self, target):
        self.target = target
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.closing = False
        self.thread = threading.Thread(target=self._accept, daemon=True, name="relay-%d" % self.port)
        self.thread.start()

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        done = threading.Event()

        def pump(src, dst):
            try:
                while True:
                    data = src.recv(1 << 16)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                if not done.is_set():
                    done.set()
                    for s in (client, upstream):
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass

        t = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        t.start()
        pump(client, upstream)
        t.join(30)
        client.close()
        upstream.close()

    def reset(self):
        with self.lock:
            self.connections = 0

    def close(self):
        self.closing = True
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------ front ends

PLACEHOLDER = re.compile(r"@[A-Z_]+@")


def fill(template_path, values):
    text = Path(template_path).read_text()
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    left = sorted(set(PLACEHOLDER.findall(text)))
    if left:
        raise ValueError("%s: placeholders left unfilled: %s" % (template_path, ", ".join(left)))
    return text


@dataclass
class Variant:
    """One front end × protocol combination of the test matrix."""
    name: str
    frontend: str          # nginx | apache | lighttpd
    protocol: str          # fastcgi | scgi | uwsgi
    template: str          # file in conf/<frontend>/
    keepconn: bool = False
    #: chunked request bodies: "ok" (de-chunked by the front end or streamed
    #: over FastCGI) or an HTTP status the front end answers itself.
    chunked: object = "ok"
    #: whether the front end passes the application's Content-Length on to
    #: the client for GET and for HEAD (Apache's CGI-form proxies do not always).
    cl_on_get: bool = True
    cl_on_head: bool = True


VARIANTS = [
    Variant("nginx-fastcgi", "nginx", "fastcgi", "fastcgi.conf"),
    Variant("nginx-fastcgi-keepconn", "nginx", "fastcgi", "fastcgi-keepalive.conf", keepconn=True),
    Variant("nginx-scgi", "nginx", "scgi", "scgi.conf"),
    Variant("nginx-uwsgi", "nginx", "uwsgi", "uwsgi.conf"),
    # Apache 2.4.71 mod_proxy_fcgi and mod_proxy_scgi drop the backend's
    # Content-Length (observed with backends that did send it): GET answers
    # go out chunked, HEAD answers without a length. (mod_proxy_scgi keeps
    # it on HEAD only if the backend wrongly sends the body too.)
    Variant("apache-fastcgi", "apache", "fastcgi", "fastcgi.conf", cl_on_get=False, cl_on_head=False),
    Variant("apache-fastcgi-reuse", "apache", "fastcgi", "fastcgi-reuse.conf", keepconn=True,
            cl_on_get=False, cl_on_head=False),
    # BEHAVIOUR.md 3.2: mod_proxy_scgi and mod_proxy_uwsgi answer 411 to chunked uploads.
    Variant("apache-scgi", "apache", "scgi", "scgi.conf", chunked=411, cl_on_get=False,
            cl_on_head=False),
    Variant("apache-uwsgi", "apache", "uwsgi", "uwsgi.conf", chunked=411),
    Variant("lighttpd-fastcgi", "lighttpd", "fastcgi", "fastcgi.conf"),
    Variant("lighttpd-scgi", "lighttpd", "scgi", "scgi.conf"),
    Variant("lighttpd-uwsgi", "lighttpd", "uwsgi", "uwsgi.conf"),
]
VARIANT = {v.name: v for v in VARIANTS}


@dataclass
class Slot:
    """One application behind every variant, at its own front-end port."""
    name: str
    app: str
    mount: str = ""
    args: list = field(default_factory=list)
    python_path: list = field(default_factory=list)


SLOTS = [
    Slot("main", "router.py", args=["--processes", "2", "--threads", "8"]),
    Slot("mounted", "router.py", mount="/app", args=["--processes", "1", "--threads", "4"]),
    Slot("passauth", "env_app.py", args=["--pass-authorization"]),
    Slot("validated", "validated.py", mount="/v"),
    Slot("flask", "flask_app.py", mount="/flask"),
    Slot("django", "testsite.wsgi:application", mount="/django",
         python_path=[str(APPS / "django_project")]),
]
SLOT = {s.name: s for s in SLOTS}

FRONTENDS = {
    "nginx": {"main": "nginx.conf"},
    "apache": {"main": "httpd.conf"},
    "lighttpd": {"main": "lighttpd.conf"},
}


class FrontEnd:
    """nginx, Apache httpd or lighttpd serving every variant × slot it has."""

    def __init__(self, run_dir, kind, stack):
        self._workdir(run_dir, kind, kind)
        self.variants = [v for v in VARIANTS if v.frontend == kind]

        def write_sites():
            self.ports = {}          # (variant, slot) -> port
            for v in self.variants:
                for s in SLOTS:
                    port = free_ports(1)[0]
                    self.ports[(v.name, s.name)] = port
                    backend_port = stack.backend_port(v, s)
                    values = {
                        "LISTEN_HOST": HOST, "LISTEN_PORT": port,
                        "BACKEND_HOST": HOST, "BACKEND_PORT": backend_port,
                        "MOUNT": s.mount, "WORKDIR": self.dir,
                        "NAME": re.sub(r"\W", "_", "wsgi_fpm_%s_%s" % (v.name, s.name)),
                    }
                    text = fill(CONF / kind / v.template, values)
                    (self.dir / "sites" / ("%s--%s.conf" % (v.name, s.name))).write_text(text)

        self._start(run_dir, write_sites)

    def _start(self, run_dir, write_sites):
        """Writes the sites on fresh ports (`write_sites`) and starts the
        front end; again on other ports, up to BIND_ATTEMPTS times in all,
        when it could not bind one: another process may take a port
        between free_ports' check and the front end's bind (one that did
        failed every test behind that front end)."""
        logs = [self.dir / "logs" / name for name in ("console.log", "error.log")]
        for attempt in range(1, BIND_ATTEMPTS + 1):
            seen = [_size(log) for log in logs]
            try:
                write_sites()
                self._launch(run_dir)
                return
            except StartError:
                # Only what this attempt logged says why it failed.
                if attempt == BIND_ATTEMPTS or not any(
                        BIND_FAILED in _read_from(log, at) for log, at in zip(logs, seen)):
                    self.stop()
                    raise
            except Exception:
                # A missing binary, a template that does not fill: nothing
                # left behind either.
                self.stop()
                raise
            # Stopped once, here or by stop(): its pid is not signalled again.
            self.proc.stop()
            with open(self.dir / "logs" / "console.log", "a") as f:
                f.write("\n[harness] a port was taken before %s bound it: "
                        "starting again on other ports\n" % self.kind)

    def _workdir(self, run_dir, kind, label):
        """The front end's directory: logs, tmp, sites, htdocs; linked from
        the run dir as `label` while it runs, copied there at stop."""
        self.kind = kind
        # The front ends' workers run as nobody (Apache's User, nginx's
        # default when started as root) and nginx's need to write request
        # bodies to its temp dirs: work in a world-traversable temp dir (the
        # checkout may sit under a 0700 home), copied into the run dir at stop.
        self.tmp = Path(tempfile.mkdtemp(prefix="wsgi-fpm-%s-" % kind))
        os.chmod(self.tmp, 0o755)
        self.dir = self.tmp / kind
        self.keep = Path(run_dir) / label
        try:
            self.keep.symlink_to(self.dir)  # while it runs
        except OSError:
            pass
        for sub in ("logs", "tmp", "sites", "htdocs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)

    def _launch(self, run_dir):
        """Writes the main configuration, starts the front end and waits
        until it listens on every port in self.ports."""
        kind = self.kind
        main_port = free_ports(1)[0]
        main = fill(CONF / kind / FRONTENDS[kind]["main"],
                    {"WORKDIR": self.dir, "LISTEN_HOST": HOST, "LISTEN_PORT": main_port})
        conf = self.dir / FRONTENDS[kind]["main"]
        conf.write_text(main)
        if kind == "nginx":
            cmd = [shutil.which("nginx") or "/usr/sbin/nginx", "-e", self.dir / "logs" / "error.log",
                   "-p", self.dir, "-c", conf]
        elif kind == "apache":
            cmd = [shutil.which("apache2") or "/usr/sbin/apache2", "-DFOREGROUND", "-d", self.dir, "-f", conf]
        else:
            cmd = [shutil.which("lighttpd") or "/usr/sbin/lighttpd", "-D", "-f", conf]
        self.log = self.dir / "logs" / "console.log"
        self.proc = Proc(self.keep.name, cmd, self.log, cwd=self.dir, pids_file=Path(run_dir) / "pids")
        deadline = time.monotonic() + FRONTEND_START_TIMEOUT
        for port in self.ports.values():
            if not wait_port(port, deadline, self.proc.alive) or not self.proc.alive():
                why = ("it exited" if not self.proc.alive()
                       else "not within %.0f s" % FRONTEND_START_TIMEOUT)
                # Left to the caller, which may start it again (`_start`).
                raise StartError("%s did not listen on port %d (%s); console:\n%s\nerror log:\n%s" % (
                    kind, port, why, tail(self.keep / "logs" / "console.log"),
                    tail(self.keep / "logs" / "error.log")))

    def stop(self):
        if getattr(self, "proc", None) is not None:
            self.proc.stop()
        try:
            if self.keep.is_symlink():
                self.keep.unlink()
            shutil.copytree(self.dir, self.keep, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
        except OSError:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)


class SitesFrontEnd(FrontEnd):
    """A front end of its own serving chosen site snippets from conf/<kind>/
    instead of the matrix (e.g. the auth examples, each pointing at a
    wsgi-fpm started with its own options).

    `sites` maps a site name to (template, values): `values` fills the
    snippet's placeholders beyond LISTEN_HOST, LISTEN_PORT (a free port,
    given here), BACKEND_HOST and WORKDIR; a callable value is called with
    the front end's directory. `files` maps paths relative to that
    directory (its document root is `htdocs/`) to their contents.
    self.ports: site name → port. Linked from the run dir as
    `<kind>-<label>`.
    """

    def __init__(self, run_dir, kind, sites, files=None, label="sites"):
        self._workdir(run_dir, kind, "%s-%s" % (kind, label))
        for rel, content in (files or {}).items():
            path = self.dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
            os.chmod(path, 0o644)

        def write_sites():
            self.ports = {}
            for name, (template, values) in sites.items():
                port = free_ports(1)[0]
                self.ports[name] = port
                full = {"LISTEN_HOST": HOST, "LISTEN_PORT": port, "BACKEND_HOST": HOST, "WORKDIR": self.dir}
                full.update({k: (v(self.dir) if callable(v) else v) for k, v in values.items()})
                (self.dir / "sites" / ("%s.conf" % name)).write_text(fill(CONF / kind / template, full))

        self._start(run_dir, write_sites)


class Stack:
    """Everything started for the session, started on first use, stopped at the end."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.backends = {}       # slot name -> WsgiFpm (started lazily)
        self.backend_ports = {}  # slot name -> {protocol: port}, reserved up front
        self.frontends = {}
        self.relays = {}         # (variant, slot) -> Relay
        self.extra = []          # other WsgiFpm instances to stop at the end
        self.failed = {}         # what could not start, so later tests fail fast
        self.lock = threading.Lock()
        for s in SLOTS:
            self.backend_ports[s.name] = dict(zip(("fastcgi", "scgi", "uwsgi"), free_ports(3)))

    # ports the front-end configs point at
    def backend_port(self, variant, slot):
        port = self.backend_ports[slot.name][variant.protocol]
        if variant.keepconn:
            key = (variant.name, slot.name)
            if key not in self.relays:
                self.relays[key] = Relay((HOST, port))
            return self.relays[key].port
        return port

    def start_backends(self):
        """Start every slot's wsgi-fpm at once, in parallel.

        Their ports were reserved (bound, then released) a moment ago; binding
        them soon matters, since a released port can be handed out as the
        local port of an outgoing connection, and many are opened later.
        A slot that fails to start fails the tests that use it, not the rest.
        """
        threads = [threading.Thread(target=self._start_backend, args=(s,)) for s in SLOTS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def backend(self, slot_name):
        if slot_name in self.failed:
            raise StartError(self.failed[slot_name])
        if slot_name not in self.backends:
            self._start_backend(SLOT[slot_name])
            if slot_name in self.failed:
                raise StartError(self.failed[slot_name])
        return self.backends[slot_name]

    def _start_backend(self, s):
        # On the ports reserved up front: the front-end configs name them.
        args = list(s.args) + (["--mount", s.mount] if s.mount else [])
        app = APPS / s.app if s.app.endswith(".py") else s.app
        try:
            b = WsgiFpm(self.run_dir, "slot-" + s.name, app, args,
                        ports=self.backend_ports[s.name], python_path=s.python_path)
        except (StartError, OSError) as e:
            self.failed[s.name] = str(e)
            return
        try:
            b.wait_ready()
        except StartError as e:
            b.stop()
            self.failed[s.name] = str(e)
            return
        self.backends[s.name] = b

    def frontend(self, kind):
        with self.lock:
            key = "frontend:" + kind
            if key in self.failed:
                raise StartError(self.failed[key])
            if kind not in self.frontends:
                try:
                    self.frontends[kind] = FrontEnd(self.run_dir, kind, self)
                except Exception as e:
                    self.failed[key] = str(e)
                    raise
            return self.frontends[kind]

    def spawn(self, name, app, args=(), **kw):
        """An extra wsgi-fpm instance, stopped at the end of the session or by the caller."""
        b = WsgiFpm(self.run_dir, name, app, args, **kw)
        self.extra.append(b)
        try:
            b.wait_ready()
        except StartError:
            b.stop()
            raise
        return b

    def stop(self):
        for fe in self.frontends.values():
            fe.stop()
        for r in self.relays.values():
            r.close()
        for b in list(self.backends.values()) + self.extra:
            b.stop()



def wait_for(predicate, timeout=10.0, what="condition", every=0.05):
    """The predicate's first true value, polled until the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
