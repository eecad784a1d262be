"""The stacks: how each server is started for one workload's application, and
what nginx (or Apache httpd, for mod_wsgi) puts in front of it.

One nginx with one worker process fronts every stack but mod_wsgi, each
stack on its own port; it is started once per run. Backends are started per
workload (each workload has its own application file) on ports fixed for the
run. The front-end configurations are written here rather than taken from
conf/: the peers need their own, and every upstream with connection reuse
gets the same pool size and timeouts.
"""
import grp
import os
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path

from common import HOST, LIB, Proc, START_TIMEOUT, free_ports, is_root, memory, cmdline, tool, tree, \
    wait_port, wsgi_fpm_bin

#: Keep-alive timeout of nginx's upstream pools: below every backend's own
#: idle timeout, so that nginx never reuses a connection the backend is
#: closing (a POST on such a connection would fail, not be retried).
UPSTREAM_IDLE = "30s"
#: Backends' idle timeout, where they have one (seconds).
BACKEND_IDLE = 75
#: Requests per kept connection before nginx (or Apache) replaces it.
KEEPALIVE_REQUESTS = 10000


def somaxconn():
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 128


def unprivileged_user():
    """(user, group) that nginx's and mod_wsgi's workers run as when we are root."""
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_name, grp.getgrgid(pw.pw_gid).gr_name
    except KeyError:
        return "nobody", "nogroup"


class Ctx:
    """What the stacks share in one run."""

    def __init__(self, workdir, installer, processes, threads, keepalive, env):
        self.workdir = Path(workdir)
        self.apps = self.workdir / "apps"
        self.data = self.workdir / "data"
        self.installer = installer      # None in --check mode: wsgi-fpm only, python3 on PATH
        self.processes = processes
        self.threads = threads
        self.keepalive = keepalive
        self.env = env

    def venv_bin(self, name):
        return str(self.installer.bin(name))

    def log(self, name):
        return self.workdir / "logs" / (name + ".log")


class Running:
    """One started backend: its processes, for memory, liveness and stop."""

    def __init__(self, procs, pids=None, log=None):
        self.procs = procs
        self._pids = pids
        self.log = log or procs[0].log     # where a failure is explained

    def alive(self):
        return all(p.alive() for p in self.procs)

    def pids(self):
        if self._pids:
            return self._pids()
        return [pid for p in self.procs for pid in p.pids()]

    def memory(self):
        return memory(self.pids())

    def stop(self):
        for p in self.procs:
            p.stop()


def _upstream(name, port, keepalive):
    return ("upstream %s {\n    server %s:%d;\n    keepalive %d;\n    keepalive_requests %d;\n"
            "    keepalive_timeout %s;\n}\n" % (name, HOST, port, keepalive, KEEPALIVE_REQUESTS, UPSTREAM_IDLE))


def _proxy_site(stack, ctx):
    """proxy_pass over HTTP/1.1 with upstream keepalive."""
    return _upstream(stack.upstream, stack.backend_port, ctx.keepalive) + _server(
        stack.front_port, ["proxy_pass http://%s;" % stack.upstream, "proxy_http_version 1.1;",
                           'proxy_set_header Connection "";', "proxy_set_header Host $host;"])


def _server(port, body):
    return "server {\n    listen %s:%d;\n    location / {\n%s    }\n}\n" % (
        HOST, port, "".join("        %s\n" % line for line in body))


class Stack:
    name = label = ""
    peer = None            # the installation it needs (peers.PEERS), None for none
    front = "nginx"
    note = ""

    def __init__(self):
        self.front_port, self.backend_port = free_ports(2)

    @property
    def upstream(self):
        return re.sub(r"\W", "_", "up_" + self.name)

    def supports(self, workload):
        """None, or why this stack has no figure for the workload."""
        return None

    def prepare(self, ctx):
        """None, or why this stack cannot run here (called once, after installation)."""
        return None

    def nginx_site(self, ctx):
        raise NotImplementedError

    def start(self, ctx, workload):
        raise NotImplementedError

    def ready_port(self):
        """A port to wait for before the first check (the backend's own)."""
        return self.backend_port

    def logfile(self, ctx, workload):
        return ctx.log("%s-%s" % (self.name, workload.name))


# ------------------------------------------------------------------ wsgi-fpm

#: The suffix of a stack's name when it runs `bench/run --against`'s binary.
AGAINST = "@against"


#: How a backend protocol is named in the stacks' labels.
PROTOCOL_LABEL = {"fastcgi": "FastCGI", "uwsgi": "uwsgi", "scgi": "SCGI"}


class WsgiFpm(Stack):
    PASS = {
        "fastcgi": ("/etc/nginx/fastcgi_params", "fastcgi_pass"),
        "uwsgi": ("/etc/nginx/uwsgi_params", "uwsgi_pass"),
        "scgi": ("/etc/nginx/scgi_params", "scgi_pass"),
    }

    def __init__(self, proto, keepconn=False, binary=None):
        """`binary`: another wsgi-fpm to run instead of the one under test
        (`bench/run --against`); its stack is named after this one."""
        self.proto = proto
        self.keepconn = keepconn
        self.binary = binary
        self.name = "wsgi-fpm-%s%s" % (proto, "-keepconn" if keepconn else "")
        self.label = "wsgi-fpm %s%s" % (PROTOCOL_LABEL[proto],
                                        " keep_conn" if keepconn else "")
        if binary is not None:
            self.name += AGAINST
            self.label += " (against)"
        super().__init__()

    def against(self, binary):
        """The same stack running `binary`."""
        return WsgiFpm(self.proto, self.keepconn, binary)

    def binary_path(self):
        return self.binary if self.binary is not None else wsgi_fpm_bin()

    def prepare(self, ctx):
        b = self.binary_path()
        if not os.access(b, os.X_OK):
            if self.binary is not None:
                return "no wsgi-fpm binary at %s (--against)" % b
            return "no wsgi-fpm binary at %s (cargo build --release --workspace, or set WSGI_FPM_BIN)" % b
        return None

    def nginx_site(self, ctx):
        params, directive = self.PASS[self.proto]
        if self.keepconn:
            return _upstream(self.upstream, self.backend_port, ctx.keepalive) + _server(
                self.front_port, ["include %s;" % params, "fastcgi_keep_conn on;",
                                  "%s %s;" % (directive, self.upstream)])
        return _server(self.front_port, ["include %s;" % params,
                                         "%s %s:%d;" % (directive, HOST, self.backend_port)])

    def start(self, ctx, workload):
        cmd = [self.binary_path(), "--" + self.proto, "%s:%d" % (HOST, self.backend_port),
               "--processes", ctx.processes, "--threads", ctx.threads]
        # Named, not left to each binary: a pip-installed build (--against)
        # would otherwise run its own venv's interpreter.
        python = shutil.which("python3", path=ctx.env.get("PATH"))
        if python:
            cmd += ["--python", python]
        if is_root():
            cmd.append("--allow-root")
        cmd.append(ctx.apps / workload.app)
        return Running([Proc(self.name, cmd, self.logfile(ctx, workload), cwd=ctx.apps, env=ctx.env)])


def round_order(live, rnd):
    """The stacks in round `rnd` (from 0): each round starts one stack (or
    pair) further on, so none is always first; a stack and its --against
    twin stay back to back, in turn first. Over 2 × units rounds every
    unit starts once in each of its two orders: with an even count of
    units the start moves one more every units rounds, else a start's
    parity would fix the order of the pair that starts (the twin would
    always be the first after nginx's reload)."""
    units = []
    for s in live:
        if units and s.name == units[-1][0].name + AGAINST:
            units[-1].append(s)
        else:
            units.append([s])
    n = len(units)
    k = (rnd + (rnd // n if n % 2 == 0 else 0)) % n if units else 0
    return [s for u in units[k:] + units[:k] for s in (u[::-1] if rnd % 2 else u)]


def paired(this, other):
    """Round by round, `this` stack's requests/s over its --against twin's
    in the same round (their `rounds` entries from bench/run), and the
    median of those ratios. A round either side has no figure for (wrk
    failed, or nothing was answered), had errors (nginx's quick 502s
    count as requests) or ran on nginx's old upstream connections
    (`renewal`) is left out."""
    def clean(r):
        return r.get("rps") and not r.get("errors") and not r.get("renewal")
    theirs = {r["round"]: r["rps"] for r in other.get("rounds", []) if clean(r)}
    ratios = [r["rps"] / theirs[r["round"]] for r in this.get("rounds", [])
              if clean(r) and r["round"] in theirs]
    return {"ratios": ratios, "median": statistics.median(ratios) if ratios else None}


def renewal_notes(workload_result):
    """One line per round whose renewal of nginx's upstream connections
    failed, from the `renewal` bench/run writes into that round's entry of
    every stack; a round whose stacks ran on old connections is not
    comparable with the others."""
    troubles = {}
    for entry in workload_result.values():
        for r in entry.get("rounds", []):
            if r.get("renewal"):
                troubles.setdefault(r["round"], r["renewal"])
    return ["round %d ran on nginx's old upstream connections: %s" % (rnd, why)
            for rnd, why in sorted(troubles.items())]


# ------------------------------------------------------------------ uWSGI

class Uwsgi(Stack):
    peer = "uwsgi"

    def __init__(self, proto):
        self.proto = proto
        self.name = "uwsgi-" + proto
        self.label = "uWSGI " + PROTOCOL_LABEL[proto]
        super().__init__()

    def nginx_site(self, ctx):
        params, directive = WsgiFpm.PASS[self.proto]
        if self.proto in ("fastcgi", "scgi"):
            # The stock fastcgi_params send the whole path as SCRIPT_NAME and
            # no PATH_INFO (PHP's view), and the stock scgi_params send
            # neither; uWSGI takes them as they come, so the application
            # would see every path as its own root (wsgi-fpm derives them,
            # SPEC §3).
            stock = Path(params).read_text().splitlines()
            params = ctx.workdir / "nginx" / ("%s_params_wsgi" % self.proto)
            params.parent.mkdir(parents=True, exist_ok=True)
            params.write_text("\n".join([l for l in stock if "SCRIPT_NAME" not in l] + [
                '%s_param  SCRIPT_NAME        "";' % self.proto,
                "%s_param  PATH_INFO          $uri;" % self.proto, ""]))
        return _server(self.front_port, ["include %s;" % params,
                                         "%s %s:%d;" % (directive, HOST, self.backend_port)])

    def start(self, ctx, workload):
        cmd = [ctx.venv_bin("uwsgi"), "--home", ctx.installer.venv,
               "--master", "--processes", ctx.processes, "--threads", ctx.threads,
               "--%s-socket" % self.proto, "%s:%d" % (HOST, self.backend_port),
               "--chdir", ctx.apps, "--wsgi-file", ctx.apps / workload.app, "--need-app",
               "--disable-logging", "--listen", min(1024, somaxconn())]
        # uWSGI's master treats SIGTERM as "reload"; SIGINT stops it.
        return Running([Proc(self.name, cmd, self.logfile(ctx, workload), cwd=ctx.apps, env=ctx.env,
                             stop_signal=signal.SIGINT)])


# ------------------------------------------------------------------ HTTP servers behind proxy_pass

class HttpServer(Stack):
    def __init__(self, server):
        self.peer = server
        self.name = server
        self.label = {"bjoern": "bjoern", "granian": "Granian", "gunicorn": "gunicorn gthread",
                      "pyruvate": "pyruvate"}[server]
        super().__init__()

    def threads_note(self, ctx):
        if self.name == "bjoern":
            return "bjoern: %d processes × 1 thread (one event loop per process, no thread pool)" % ctx.processes
        return ""

    def nginx_site(self, ctx):
        return _proxy_site(self, ctx)

    def start(self, ctx, workload):
        app = ctx.apps / workload.app
        module = "%s:application" % Path(workload.app).stem
        p, t, port = ctx.processes, ctx.threads, self.backend_port
        if self.name == "bjoern":
            cmd = [ctx.venv_bin("python"), LIB / "serve_bjoern.py", app, HOST, port, p]
        elif self.name == "pyruvate":
            cmd = [ctx.venv_bin("python"), LIB / "serve_pyruvate.py", app, HOST, port, p, t, BACKEND_IDLE]
        elif self.name == "granian":
            cmd = [ctx.venv_bin("granian"), "--interface", "wsgi", "--host", HOST, "--port", port,
                   "--workers", p, "--blocking-threads", t, "--working-dir", ctx.apps,
                   "--log-level", "warning", "--no-access-log", module]
        else:
            cmd = [ctx.venv_bin("gunicorn"), "--worker-class", "gthread", "--workers", p, "--threads", t,
                   "--bind", "%s:%d" % (HOST, port), "--chdir", ctx.apps, "--keep-alive", BACKEND_IDLE,
                   "--backlog", min(1024, somaxconn()), "--log-level", "warning", module]
        return Running([Proc(self.name, cmd, self.logfile(ctx, workload), cwd=ctx.apps, env=ctx.env)])


# ------------------------------------------------------------------ mod_wsgi

class ModWsgi(Stack):
    """mod_wsgi in daemon mode inside Apache httpd (event MPM, one child
    process like nginx's one worker); wrk talks to Apache directly."""
    name = "mod_wsgi"
    label = "mod_wsgi daemon"
    peer = "mod_wsgi"
    front = "apache"

    def __init__(self):
        super().__init__()
        self.module_config = None

    def ready_port(self):
        return self.front_port

    def prepare(self, ctx):
        apache = tool("apache2") or tool("httpd")
        if not apache:
            return "no Apache httpd (apt-get install apache2)"
        self.apache = apache
        if not Path("/usr/lib/apache2/modules/mod_mpm_event.so").exists():
            return "no /usr/lib/apache2/modules/mod_mpm_event.so (Debian's apache2 package)"
        r = subprocess.run([ctx.venv_bin("mod_wsgi-express"), "module-config"], capture_output=True, text=True)
        if r.returncode != 0:
            return "mod_wsgi-express module-config failed: %s" % (r.stderr.strip()[-300:])
        self.module_config = r.stdout.strip()
        if is_root():
            # mod_wsgi will not run daemon processes as root: the unprivileged
            # user must be able to read the interpreter, the venv and the apps.
            user, _ = unprivileged_user()
            runuser = tool("runuser")
            if runuser:
                r = subprocess.run([runuser, "-u", user, "--", ctx.venv_bin("python"), "-c",
                                    "import flask; open(%r).close()" % str(ctx.apps / "hello.py")],
                                   capture_output=True, text=True, cwd="/")
                if r.returncode != 0:
                    last = (r.stderr.strip().splitlines() or ["exit status %d" % r.returncode])[-1]
                    return ("its daemon processes run as %s, who cannot use %s (%s): choose --python and "
                            "--cache readable by %s" % (user, ctx.installer.venv, last, user))
        return None

    def start(self, ctx, workload):
        d = ctx.workdir / "apache"
        shutil.rmtree(d, ignore_errors=True)
        (d / "logs").mkdir(parents=True)
        os.chmod(d, 0o755)
        errlog = ctx.log("%s-%s-error" % (self.name, workload.name))
        user, group = unprivileged_user()
        run_as = ["User %s" % user, "Group %s" % group] if is_root() else []
        daemon_user = " user=%s group=%s" % (user, group) if is_root() else ""
        threads = max(64, ctx.keepalive * 2)
        conf = "\n".join([
            'ServerRoot "%s"' % d,
            "ServerName localhost",
            "PidFile %s/httpd.pid" % d,
            "Mutex file:%s default" % d,
            "DefaultRuntimeDir %s" % d,
            "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so",
            "LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so",
            self.module_config,
            "Listen %s:%d" % (HOST, self.front_port),
            *run_as,
            # One child process, threads enough for every connection.
            "StartServers 1", "ServerLimit 1", "ThreadLimit %d" % threads, "ThreadsPerChild %d" % threads,
            "MaxRequestWorkers %d" % threads, "MinSpareThreads 1", "MaxSpareThreads %d" % threads,
            "KeepAlive On", "MaxKeepAliveRequests %d" % KEEPALIVE_REQUESTS, "KeepAliveTimeout 30",
            "ErrorLog %s" % errlog, "LogLevel warn",
            "WSGISocketPrefix %s/wsgi" % d,
            "WSGIDaemonProcess bench processes=%d threads=%d display-name=(wsgi:bench) home=%s%s"
            % (ctx.processes, ctx.threads, ctx.apps, daemon_user),
            "WSGIProcessGroup bench",
            "WSGIApplicationGroup %{GLOBAL}",
            "WSGIScriptAlias / %s" % (ctx.apps / workload.app),
            "<Directory %s>\n    Require all granted\n</Directory>" % ctx.apps,
            "",
        ])
        (d / "httpd.conf").write_text(conf)
        proc = Proc(self.name, [self.apache, "-DFOREGROUND", "-d", d, "-f", d / "httpd.conf"],
                    self.logfile(ctx, workload), cwd=d, env=ctx.env)

        def daemons():
            return [p for p in tree(proc.pid) if cmdline(p).startswith("(wsgi:")]
        return Running([proc], pids=daemons, log=errlog)


# ------------------------------------------------------------------ the ceiling

class NginxCeiling(Stack):
    """nginx proxying with upstream keepalive to a second nginx that answers
    itself: what no backend can beat behind this one front-end worker."""
    name = "nginx"
    label = "nginx→nginx (ceiling)"

    def supports(self, workload):
        return None if workload.ceiling else "the answer needs application code"

    def nginx_site(self, ctx):
        return _proxy_site(self, ctx)

    def start(self, ctx, workload):
        d = ctx.workdir / "nginx-ceiling"
        shutil.rmtree(d, ignore_errors=True)
        for sub in ("logs", "tmp"):
            (d / sub).mkdir(parents=True)
        os.chmod(d, 0o755)
        kind = workload.ceiling
        if kind[0] == "text":
            body = kind[2].decode().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            answer = ["default_type %s;" % kind[1], 'return 200 "%s";' % body]
        else:
            answer = ["default_type application/octet-stream;", "alias %s;" % (ctx.data / kind[1])]
        conf = nginx_main(d, ctx.processes, "server {\n        listen %s:%d;\n        location = %s {\n%s"
                          "        }\n    }" % (HOST, self.backend_port, workload.path,
                                                 "".join("            %s\n" % a for a in answer)))
        (d / "nginx.conf").write_text(conf)
        proc = Proc(self.name, [tool("nginx"), "-e", d / "logs" / "error.log", "-p", d, "-c", d / "nginx.conf"],
                    self.logfile(ctx, workload), cwd=d, env=ctx.env)
        return Running([proc])


def nginx_main(d, workers, servers):
    """A complete nginx configuration living under `d`, in the foreground;
    `servers` goes at the end of its http block."""
    return """daemon off;
worker_processes %d;
pid %s/nginx.pid;
error_log %s/logs/error.log warn;
# A reload's old worker ends within this even with a request in flight.
worker_shutdown_timeout 2s;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path %s/tmp/body;
    fastcgi_temp_path %s/tmp/fastcgi;
    scgi_temp_path %s/tmp/scgi;
    uwsgi_temp_path %s/tmp/uwsgi;
    proxy_temp_path %s/tmp/proxy;
    # The 1 MiB uploads stay in memory rather than in temp files.
    client_max_body_size 16m;
    client_body_buffer_size 2m;
    keepalive_requests %d;
    %s
}
""" % (workers, d, d, d, d, d, d, d, KEEPALIVE_REQUESTS, servers)


class FrontEnd:
    """The one nginx, one worker process, in front of every stack but mod_wsgi."""

    def __init__(self, ctx, stacks):
        self.dir = ctx.workdir / "nginx"
        for sub in ("logs", "tmp", "sites"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        for s in stacks:
            (self.dir / "sites" / ("%s.conf" % s.name)).write_text(s.nginx_site(ctx))
        (self.dir / "nginx.conf").write_text(nginx_main(self.dir, 1, "include %s/sites/*.conf;" % self.dir))
        self.stacks = stacks
        self.proc = Proc("nginx-front", [tool("nginx"), "-e", self.dir / "logs" / "error.log", "-p", self.dir,
                                         "-c", self.dir / "nginx.conf"], ctx.log("nginx-front"), cwd=self.dir)
        deadline = time.monotonic() + START_TIMEOUT
        for s in stacks:
            if not wait_port(s.front_port, deadline, self.proc):
                self.stop()
                raise RuntimeError("nginx did not listen on port %d; see %s and %s"
                                   % (s.front_port, ctx.log("nginx-front"), self.dir / "logs" / "error.log"))

    def renew_upstream_connections(self, timeout=10.0):
        """Closes every kept upstream connection, so that the next timed runs
        open their own. How nginx's kept connections happen to spread over
        a backend's processes when they open (31 to 1, 23 to 8, 14 to 18 over
        two wsgi-fpm workers, seen on hello) moves a stack's requests/s by up
        to 15 %, and lasts until each has served `keepalive_requests` or idled
        UPSTREAM_IDLE: without this, the rounds of a short run share that
        draw instead of each making its own. A graceful reload (SIGHUP): the
        old worker closes its idle connections and exits; this waits until it
        has. None once done, else why not (the caller stops if nginx itself
        is gone)."""
        log = self.dir / "logs" / "error.log"
        if not self.proc.alive():
            return "the front nginx has exited; see %s" % log
        before = set(self.proc.pids()) - {self.proc.pid}
        # send_signal, not os.kill: it refuses a child already reaped, whose
        # PID may be another process's by now.
        self.proc.popen.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        now = before
        while time.monotonic() < deadline:
            if not self.proc.alive():
                return "the front nginx exited on the reload; see %s" % log
            now = set(self.proc.pids()) - {self.proc.pid}
            if now and not now & before:
                return None
            time.sleep(0.05)
        if now == before:
            return ("nginx started no new worker within %g s of the reload (a refused configuration?); see %s"
                    % (timeout, log))
        return "nginx's old worker %s had not exited %g s after the reload" % (
            ", ".join(str(p) for p in sorted(now & before)), timeout)

    def stop(self):
        self.proc.stop()


def all_stacks():
    """In the column order of PERFORMANCE.md."""
    return [Uwsgi("uwsgi"), Uwsgi("fastcgi"), Uwsgi("scgi"), HttpServer("bjoern"), HttpServer("granian"),
            HttpServer("pyruvate"), ModWsgi(), HttpServer("gunicorn"),
            WsgiFpm("fastcgi", keepconn=True), WsgiFpm("fastcgi"), WsgiFpm("uwsgi"), WsgiFpm("scgi"),
            NginxCeiling()]


def own_stacks():
    return [WsgiFpm("fastcgi", keepconn=True), WsgiFpm("fastcgi"), WsgiFpm("uwsgi"), WsgiFpm("scgi")]
