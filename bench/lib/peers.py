"""The peers: installed on first use from Debian packages (apt-get, as root)
and PyPI (pip, into a virtual environment in a cache directory outside the
repository). A peer that cannot be installed is reported with the reason;
nothing here raises for it.

Every stack, wsgi-fpm included, runs the same interpreter from the same
virtual environment, so that the comparison is between servers and not
between Python builds. The default interpreter is the distribution's
/usr/bin/python3: mod_wsgi refuses to run daemon processes as root, so the
interpreter and the environment must be readable by an unprivileged user
(a pyenv build under a 0700 home is not).
"""
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from common import is_root, say

#: What each peer needs: Debian packages (build dependencies), PyPI packages,
#: and the program or module that shows it is installed.
PEERS = {
    "uwsgi": {"apt": ["gcc"], "pip": ["uwsgi"], "bin": "uwsgi", "headers": True},
    "bjoern": {"apt": ["gcc", "libev-dev"], "pip": ["bjoern"], "module": "bjoern", "headers": True},
    "granian": {"apt": [], "pip": ["granian"], "bin": "granian"},
    "gunicorn": {"apt": [], "pip": ["gunicorn"], "bin": "gunicorn"},
    "pyruvate": {"apt": [], "pip": ["pyruvate"], "module": "pyruvate"},
    "mod_wsgi": {"apt": ["gcc", "apache2-dev"], "pip": ["mod_wsgi"], "bin": "mod_wsgi-express",
                 "headers": True},
}
#: Installed into the environment for every stack: the Flask workload.
BASE = ["flask"]


def default_cache():
    """$WSGI_FPM_BENCH_CACHE; as root /var/cache/wsgi-fpm-bench (root's home
    is usually closed to the user mod_wsgi's daemons run as); otherwise
    $XDG_CACHE_HOME or ~/.cache, /wsgi-fpm-bench."""
    if os.environ.get("WSGI_FPM_BENCH_CACHE"):
        return Path(os.environ["WSGI_FPM_BENCH_CACHE"])
    if is_root():
        return Path("/var/cache/wsgi-fpm-bench")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wsgi-fpm-bench"


def default_python():
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else (shutil.which("python3") or "python3")


def _last_lines(text, n=3):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    errs = [l for l in lines if "error" in l.lower()]
    return " | ".join((errs or lines)[-n:])[:400]


class Installer:
    """The cache: one virtual environment per interpreter, and install logs."""

    def __init__(self, cache, python):
        self.cache = Path(cache)
        self.python = str(python)
        self.logs = self.cache / "logs"
        self.failed = {}      # peer -> reason, so it is tried once per run
        self._apt_updated = False
        self._venv_ok = None
        try:
            info = subprocess.run([self.python, "-c",
                                   "import sys, platform, sysconfig; print(platform.python_implementation());"
                                   "print(platform.python_version()); print(sys.executable);"
                                   "print(sysconfig.get_paths()['include'])"],
                                  capture_output=True, text=True, timeout=30)
            impl, version, exe, include = info.stdout.split("\n")[:4]
            self.version = "%s %s" % (impl, version)
            self.include = include
            tag = hashlib.sha256(os.path.realpath(exe).encode()).hexdigest()[:8]
            self.venv = self.cache / ("venv-%s%s-%s" % (impl.lower(), version, tag))
            self.error = None if info.returncode == 0 else info.stderr.strip()
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            self.version, self.include, self.venv = "?", "", self.cache / "venv-unknown"
            self.error = "cannot run %s: %s" % (self.python, e)

    # -------------------------------------------------------------- paths

    def bin(self, name):
        return self.venv / "bin" / name

    @property
    def venv_python(self):
        return self.bin("python")

    # -------------------------------------------------------------- apt

    def _apt_missing(self, pkgs):
        out = []
        for p in pkgs:
            r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
            if "install ok installed" not in r.stdout:
                out.append(p)
        return out

    def apt(self, pkgs):
        """None when the Debian packages are there (installing them as root), else the reason."""
        if not shutil.which("dpkg-query"):
            return None  # not Debian: let the build say what is missing
        missing = self._apt_missing(pkgs)
        if not missing:
            return None
        if not is_root():
            return "needs Debian packages %s (install them as root)" % " ".join(missing)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / "apt.log"
        for attempt in range(2):
            say("  apt-get install %s" % " ".join(missing))
            with open(log, "a") as f:
                r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing,
                                   stdout=f, stderr=subprocess.STDOUT, env=env)
            if r.returncode == 0:
                return None
            if attempt == 0 and not self._apt_updated:
                self._apt_updated = True
                with open(log, "a") as f:
                    subprocess.run(["apt-get", "update", "-q"], stdout=f, stderr=subprocess.STDOUT, env=env)
                continue
            break
        return "apt-get install %s failed (see %s): %s" % (" ".join(missing), log, _last_lines(log.read_text()))

    # -------------------------------------------------------------- venv

    def ensure_venv(self):
        """None once the environment exists with the base packages, else the reason."""
        if self._venv_ok is not None:
            return None if self._venv_ok is True else self._venv_ok
        reason = self.error or self._make_venv()
        self._venv_ok = True if reason is None else reason
        return reason

    def _make_venv(self):
        self.logs.mkdir(parents=True, exist_ok=True)
        os.chmod(self.cache, 0o755)
        if not self.venv_python.exists():
            say("creating %s (%s)" % (self.venv, self.version))
            r = subprocess.run([self.python, "-m", "venv", str(self.venv)], capture_output=True, text=True)
            if r.returncode != 0:
                pkg = self._python_deb("venv")
                if pkg and self.apt([pkg]) is None:
                    shutil.rmtree(self.venv, ignore_errors=True)
                    r = subprocess.run([self.python, "-m", "venv", str(self.venv)], capture_output=True, text=True)
            if r.returncode != 0:
                shutil.rmtree(self.venv, ignore_errors=True)
                return "%s -m venv failed: %s" % (self.python, _last_lines(r.stdout + r.stderr))
        if not self._importable("flask"):
            reason = self.pip(BASE)
            if reason:
                # Not fatal: only the Flask workload needs it, and it will
                # fail its check with the import error for every stack.
                say("warning: %s" % reason)
        return None

    def _python_deb(self, what):
        """Debian's package of this interpreter's venv or dev files (python3.11-venv), if it is Debian's."""
        if not os.path.realpath(self.python).startswith("/usr/bin/"):
            return None
        major_minor = ".".join(self.version.split()[-1].split(".")[:2])
        return "python%s-%s" % (major_minor, what)

    def _importable(self, module):
        return subprocess.run([str(self.venv_python), "-c", "import " + module],
                              capture_output=True).returncode == 0

    def pip(self, pkgs):
        log = self.logs / ("pip-%s.log" % "-".join(pkgs))
        say("  pip install %s" % " ".join(pkgs))
        with open(log, "w") as f:
            # No cache: a wheel pip built earlier for another interpreter of
            # the same version (uWSGI, mod_wsgi, bjoern link libpython) would
            # be reused, and run against the wrong standard library.
            r = subprocess.run([str(self.venv_python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                "--no-cache-dir"] + pkgs, stdout=f, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            return "pip install %s failed (see %s): %s" % (" ".join(pkgs), log, _last_lines(log.read_text()))
        return None

    # -------------------------------------------------------------- peers

    def installed(self, peer):
        spec = PEERS[peer]
        if "bin" in spec:
            return self.bin(spec["bin"]).exists()
        return self._importable(spec["module"])

    def ensure(self, peer):
        """None when `peer` is ready to run (installing it if needed), else why not."""
        if peer in self.failed:
            return self.failed[peer]
        reason = self.ensure_venv()
        if reason is None and not self.installed(peer):
            say("installing %s" % peer)
            spec = PEERS[peer]
            pkgs = list(spec["apt"])
            if spec.get("headers") and not Path(self.include, "Python.h").exists():
                pkgs.append(self._python_deb("dev") or "python3-dev")
            reason = self.apt(pkgs) if pkgs else None
            if reason is None:
                reason = self.pip(spec["pip"])
            if reason is None and not self.installed(peer):
                reason = "installed %s, but it is not usable from %s" % (peer, self.venv)
        if reason is not None:
            self.failed[peer] = reason
        return reason

    def version_of(self, dist):
        r = subprocess.run([str(self.venv_python), "-c",
                            "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))", dist],
                           capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
