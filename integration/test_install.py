"""Installing wsgi-fpm as README "Install" says, and serving from the install.

- The wheel (`pip wheel .`: maturin builds the worker, packaging/wheel/ adds
  the master) is installed into a fresh venv in a temp dir and started from
  the venv's bin/ with a clean environment (no WSGI_FPM_WORKER_MODULE, a
  PATH without this tree) in an empty working directory, behind real
  nginx: the master must find the worker module where pip put it. A second
  pool runs Debian's /usr/bin/python3.11, as nobody, from the same install.
- The Debian package (packaging/debian/build-deb): its contents; installed
  with apt-get, serving behind nginx — with systemctl where systemd runs,
  else the installed binary started by hand with the installed
  configuration — then purged, leaving the machine as it was.

integration/test-all.sh runs this file as a step of its own (the wheel is
another release build of the worker crate). WSGI_FPM_WHEEL=path tests a
wheel built elsewhere instead of building one.
"""
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

import client
from harness import HOST, ROOT, Proc, SitesFrontEnd, free_ports, tail

SYSTEM_PYTHON = "/usr/bin/python3.11"
#: A clean environment for the installed master: nothing of this tree.
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
BUILD_TIMEOUT = 1500

is_root = os.geteuid() == 0

APP = '''\
"""Hello, plus what a worker runs on: /info."""
import json
import os
import sys


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/info":
        with open("/proc/self/maps") as f:
            modules = sorted({line.split()[-1] for line in f if "wsgi_fpm_worker" in line})
        body = json.dumps({
            "executable": sys.executable,
            "prefix": sys.prefix,
            "version": list(sys.version_info[:3]),
            "uid": os.getuid(),
            "modules": modules,
        }).encode()
        kind = "application/json"
    else:
        body = b"Hello, world!"
        kind = "text/plain; charset=utf-8"
    start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]
'''


# ------------------------------------------------------------------ helpers

def run(cmd, timeout=120, **kw):
    """Runs cmd; its output in the assertion message when it fails."""
    out = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=timeout, text=True, **kw)
    assert out.returncode == 0, "%s exited %s:\n%s" % (" ".join(map(str, cmd)), out.returncode,
                                                        out.stdout[-4000:])
    return out.stdout


def python_facts(python):
    return json.loads(run([python, "-c",
                           "import json, sys; print(json.dumps([sys.executable, sys.prefix, "
                           "list(sys.version_info[:3])]))"]))


def get_when_up(port, path, proc, log, timeout=30.0):
    """GET through the front end until the backend answers 200 (nginx says
    502 while the workers start); fails at once if wsgi-fpm exited."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None:
            assert proc.alive(), "wsgi-fpm exited:\n%s" % tail(log)
        try:
            last = client.request(port, "GET", path, timeout=10)
            if last.status == 200:
                return last
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError("no 200 for %s on port %d within %.0f s (last: %r); wsgi-fpm log:\n%s"
                         % (path, port, timeout, last, tail(log)))


def worker_modules(proc):
    """The worker module files mapped by the processes below `proc`."""
    found = set()
    for pid in proc.descendants():
        try:
            maps = Path("/proc/%d/maps" % pid).read_text()
        except OSError:
            continue
        found |= {line.split()[-1] for line in maps.splitlines() if "wsgi_fpm_worker" in line}
    return found


def uid_of(pid):
    """The real uid of a process (its /proc dir may be root's after a switch)."""
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid in /proc/%d/status" % pid)


def world_readable_dir(prefix):
    """A temp dir nobody can traverse into (mkdtemp makes it 0700)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o755)
    return d


def write(path, text, mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def nginx_for(run_dir, request, backends, label):
    """nginx on loopback ports in front of {site: backend port}
    (conf/nginx/fastcgi.conf, as every other end-to-end test)."""
    fe = SitesFrontEnd(run_dir, "nginx",
                       {name: ("fastcgi.conf", {"BACKEND_PORT": port, "MOUNT": ""})
                        for name, port in backends.items()}, label=label)
    request.addfinalizer(fe.stop)
    return fe.ports


def needs(tool):
    return pytest.mark.skipif(shutil.which(tool) is None and not Path("/usr/sbin", tool).exists(),
                              reason="%s is not installed" % tool)


# ------------------------------------------------------------------ the wheel

@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    given = os.environ.get("WSGI_FPM_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    # pip builds in the tree (maturin shares target/ with cargo) in an
    # isolated environment with maturin from the package index.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, ROOT],
        timeout=BUILD_TIMEOUT, cwd=out)
    wheels = list(out.glob("wsgi_fpm-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel):
    """A fresh venv of this interpreter under /tmp (readable by nobody),
    with the wheel installed from its file and nothing else."""
    top = world_readable_dir("wsgi-fpm-install-")
    try:
        v = top / "venv"
        run([sys.executable, "-m", "venv", v])
        run([v / "bin" / "python", "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel],
            timeout=300)
        yield v
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_wheel_is_one_abi3_wheel_with_the_master_and_the_module(wheel):
    name = wheel.name
    # One wheel for every CPython 3.9+: the stable ABI, not a version tag.
    assert "-cp39-abi3-" in name, name
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        version = name.split("-")[1]
        data = "wsgi_fpm-%s.data/scripts/wsgi-fpm" % version
        assert {"wsgi_fpm/__init__.py", "wsgi_fpm/__main__.py", "wsgi_fpm/wsgi_fpm_worker.abi3.so",
                data} <= names, sorted(names)
        record = z.read("wsgi_fpm-%s.dist-info/RECORD" % version).decode()
        assert data in record
        extracted = Path(tempfile.mkdtemp(prefix="wsgi-fpm-wheel-"))
        try:
            binary = Path(z.extract(data, extracted))
            module = Path(z.extract("wsgi_fpm/wsgi_fpm_worker.abi3.so", extracted))
            if shutil.which("readelf"):
                # Neither links libpython: the master runs no Python, and
                # the module uses the interpreter that loads it.
                for f in (binary, module):
                    dynamic = run(["readelf", "-d", f])
                    assert "libpython" not in dynamic, dynamic
        finally:
            shutil.rmtree(extracted, ignore_errors=True)


def test_pip_puts_the_binary_on_the_venvs_path_and_python_dash_m_runs_it(venv):
    binary = venv / "bin" / "wsgi-fpm"
    assert os.access(binary, os.X_OK)
    env = {"PATH": CLEAN_PATH, "HOME": str(venv.parent)}
    version = run([binary, "--version"], env=env)
    assert version.startswith("wsgi-fpm "), version
    # For a scripts directory that is not on PATH (pip install --user).
    assert run([venv / "bin" / "python", "-m", "wsgi_fpm", "--version"], env=env) == version
    where = run([venv / "bin" / "python", "-c", "import wsgi_fpm; print(wsgi_fpm.worker_module())"])
    assert Path(where.strip()).is_file() and Path(where.strip()).is_relative_to(venv)


def test_the_installed_wheel_serves_behind_nginx_with_the_venvs_python_and_debians(venv, run_dir, request):
    top = venv.parent
    app = write(top / "app" / "app.py", APP)
    (top / "cwd").mkdir(exist_ok=True)
    venv_port, system_port = free_ports(2)
    system = Path(SYSTEM_PYTHON).exists()
    config = [
        "[pools.venv]",
        'app = "%s"' % app,
        'python = "%s"' % (venv / "bin" / "python"),
        'listen = ["fastcgi://%s:%d"]' % (HOST, venv_port),
        "processes = 1",
        "threads = 2",
    ]
    if system:
        config += [
            "",
            "[pools.system]",
            'app = "%s"' % app,
            'python = "%s"' % SYSTEM_PYTHON,
            'listen = ["fastcgi://%s:%d"]' % (HOST, system_port),
            "processes = 1",
            "threads = 2",
        ]
        if is_root:
            # pyenv's Python lives under /root, closed to other users; the
            # system pool's worker must load the module from the venv as
            # nobody.
            config.append('user = "nobody"')
    cfg = write(top / "wsgi-fpm.toml", "\n".join(config) + "\n")
    log = Path(run_dir) / "wsgi-fpm" / "install-wheel.log"
    env = {"PATH": CLEAN_PATH, "HOME": str(top), "LANG": "C.UTF-8"}
    master = Proc("install-wheel", [venv / "bin" / "wsgi-fpm", "--allow-root", "--config", cfg],
                  log, cwd=top / "cwd", env=env, pids_file=Path(run_dir) / "pids")
    request.addfinalizer(master.stop)
    ports = nginx_for(run_dir, request, {"venv": venv_port, **({"system": system_port} if system else {})},
                      "install-wheel")

    module = venv / run([venv / "bin" / "python", "-c",
                         "import os, sys, wsgi_fpm; print(os.path.relpath(wsgi_fpm.worker_module(), sys.prefix))"]
                        ).strip()
    assert get_when_up(ports["venv"], "/", master, log).body == b"Hello, world!"
    info = get_when_up(ports["venv"], "/info", master, log).json()
    executable, prefix, version = python_facts(venv / "bin" / "python")
    assert (info["prefix"], info["version"]) == (prefix, version), info
    assert info["modules"] == [str(module)], info

    if system:
        assert get_when_up(ports["system"], "/", master, log).body == b"Hello, world!"
        info = get_when_up(ports["system"], "/info", master, log).json()
        executable, prefix, version = python_facts(SYSTEM_PYTHON)
        assert (info["executable"], info["version"]) == (executable, version), info
        assert info["modules"] == [str(module)], info
        if is_root:
            assert info["uid"] == pwd.getpwnam("nobody").pw_uid, info
    # Nothing of this tree is mapped by any worker.
    mapped = worker_modules(master)
    assert mapped == {str(module)}, mapped
    assert not any(str(ROOT) in m for m in mapped)

    master.stop()
    assert master.popen.returncode == 0, tail(log)


def test_after_pip_install_into_a_venv_the_default_interpreter_is_the_venvs(venv):
    top = venv.parent
    app = write(top / "app" / "hello.py", APP)
    out = run([venv / "bin" / "wsgi-fpm", "--allow-root", "--fastcgi", "%s:%d" % (HOST, free_ports(1)[0]),
               "--check", app], env={"PATH": CLEAN_PATH, "HOME": str(top)}, cwd=top)
    minor = run([venv / "bin" / "python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).strip()
    assert "via %s " % (venv / "bin" / ("python" + minor)) in out, out


# ------------------------------------------------------------------ the Debian package

DEB_FILES = {
    "./usr/bin/wsgi-fpm": "-rwxr-xr-x",
    "./usr/lib/wsgi-fpm/libwsgi_fpm_worker.so": "-rw-r--r--",
    "./etc/wsgi-fpm/wsgi-fpm.toml": "-rw-r--r--",
    "./usr/share/wsgi-fpm/hello.py": "-rw-r--r--",
    "./usr/share/doc/wsgi-fpm/copyright": "-rw-r--r--",
    "./usr/share/doc/wsgi-fpm/examples/wsgi-fpm.toml": "-rw-r--r--",
}
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="not a Debian system")


def unit_dir(listing):
    for d in ("./lib/systemd/system/", "./usr/lib/systemd/system/"):
        if d + "wsgi-fpm.service" in listing:
            return d
    raise AssertionError("no wsgi-fpm.service in the package:\n%s" % "\n".join(sorted(listing)))


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    out = tmp_path_factory.mktemp("deb")
    # Reuse what the suite built (build-deb looks in the same place).
    release = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target", "release")
    if not release.is_absolute():
        release = ROOT / release
    built = (release / "wsgi-fpm").exists() and (release / "libwsgi_fpm_worker.so").exists()
    cmd = [ROOT / "packaging" / "debian" / "build-deb", "--out", out] + (["--no-build"] if built else [])
    path = Path(run(cmd, timeout=BUILD_TIMEOUT).strip().splitlines()[-1])
    assert path.exists(), path
    return path


@needs_dpkg
def test_the_deb_holds_the_master_the_module_the_units_and_a_conffile(deb):
    listing = {}
    for line in run(["dpkg-deb", "--contents", deb]).splitlines():
        mode, owner, *_rest, path = line.split()
        assert owner == "root/root", line
        listing[path] = mode
    for path, mode in DEB_FILES.items():
        assert listing.get(path) == mode, (path, listing.get(path))
    units = unit_dir(listing)
    assert listing[units + "wsgi-fpm.socket"] == "-rw-r--r--"
    assert run(["dpkg-deb", "--field", deb, "Package"]).strip() == "wsgi-fpm"
    depends = run(["dpkg-deb", "--field", deb, "Depends"])
    assert "adduser" in depends and "python3" in depends and "libc6" in depends, depends
    control = Path(tempfile.mkdtemp(prefix="wsgi-fpm-deb-control-"))
    try:
        run(["dpkg-deb", "--control", deb, control])
        assert (control / "conffiles").read_text().split() == ["/etc/wsgi-fpm/wsgi-fpm.toml"]
        assert "adduser --system" in (control / "postinst").read_text()
        service = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE, check=True).stdout
        assert b"ExecStart=/usr/bin/wsgi-fpm --config /etc/wsgi-fpm/wsgi-fpm.toml" in service
    finally:
        shutil.rmtree(control, ignore_errors=True)


def installed(package):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    return out.returncode == 0 and out.stdout.strip().endswith(" installed")


def apt_get(*args):
    # Another apt run on the machine holds the lock for a while: wait for it.
    run(["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *args], timeout=600,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


@needs_dpkg
@needs("nginx")
@pytest.mark.skipif(not is_root or shutil.which("apt-get") is None, reason="installing a package needs root and apt")
def test_the_deb_installs_serves_behind_nginx_and_purges_cleanly(deb, run_dir, request):
    if installed("wsgi-fpm"):
        pytest.skip("a wsgi-fpm package is installed already; this test installs and purges its own "
                    "(dpkg --purge wsgi-fpm to run it)")
    had_user = subprocess.run(["getent", "passwd", "wsgi-fpm"], stdout=subprocess.DEVNULL).returncode == 0
    systemd = Path("/run/systemd/system").is_dir()
    top = world_readable_dir("wsgi-fpm-deb-")
    try:
        apt_get("install", "--no-install-recommends", deb)
        assert installed("wsgi-fpm")
        user = pwd.getpwnam("wsgi-fpm")
        assert user.pw_uid < 1000 and user.pw_dir == "/var/lib/wsgi-fpm", user
        check = run(["/usr/bin/wsgi-fpm", "--config", "/etc/wsgi-fpm/wsgi-fpm.toml", "--check"],
                    env={"PATH": "/usr/bin:/bin"}, cwd="/")
        assert "/usr/share/wsgi-fpm/hello.py" in check, check

        if systemd:
            # The package enabled and started the service on 127.0.0.1:9000.
            assert run(["systemctl", "is-enabled", "wsgi-fpm.service"]).strip() == "enabled"
            deadline = time.monotonic() + 30
            while run(["systemctl", "show", "-p", "ActiveState", "--value", "wsgi-fpm"]).strip() != "active":
                assert time.monotonic() < deadline, run(["journalctl", "-u", "wsgi-fpm", "-n", "50", "--no-pager"])
                time.sleep(0.5)
            port = nginx_for(run_dir, request, {"deb": 9000}, "install-deb")["deb"]
            assert get_when_up(port, "/", None, "(journalctl -u wsgi-fpm)").body == b"Hello, world!"
            run(["systemctl", "reload", "wsgi-fpm"])
            assert get_when_up(port, "/", None, "(journalctl -u wsgi-fpm)").body == b"Hello, world!"
            run(["systemctl", "stop", "wsgi-fpm"])
            state = subprocess.run(["systemctl", "is-active", "wsgi-fpm"], stdout=subprocess.PIPE, text=True)
            assert state.stdout.strip() == "inactive", state.stdout
        else:
            # No systemd here: the unit is enabled for the next boot, and
            # the installed binary serves with the installed configuration
            # (on a free port rather than 9000), started by hand.
            wants = Path("/etc/systemd/system/multi-user.target.wants/wsgi-fpm.service")
            assert wants.is_symlink(), "postinst did not enable wsgi-fpm.service"
            backend = free_ports(1)[0]
            shipped = Path("/etc/wsgi-fpm/wsgi-fpm.toml").read_text()
            assert '"fastcgi://127.0.0.1:9000"' in shipped
            cfg = write(top / "wsgi-fpm.toml", shipped.replace("127.0.0.1:9000", "%s:%d" % (HOST, backend)))
            log = Path(run_dir) / "wsgi-fpm" / "install-deb.log"
            master = Proc("install-deb", ["/usr/bin/wsgi-fpm", "--config", cfg], log, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, pids_file=Path(run_dir) / "pids")
            request.addfinalizer(master.stop)
            port = nginx_for(run_dir, request, {"deb": backend}, "install-deb")["deb"]
            assert get_when_up(port, "/", master, log).body == b"Hello, world!"
            uids = {pid: uid_of(pid) for pid in master.descendants()}
            assert uids and set(uids.values()) == {user.pw_uid}, uids
            assert worker_modules(master) == {"/usr/lib/wsgi-fpm/libwsgi_fpm_worker.so"}
            master.stop(signal.SIGTERM)
            assert master.popen.returncode == 0, tail(log)
    finally:
        if installed("wsgi-fpm") or Path("/usr/bin/wsgi-fpm").exists():
            apt_get("purge", "wsgi-fpm")
        if not had_user:
            subprocess.run(["deluser", "--system", "--quiet", "wsgi-fpm"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            subprocess.run(["delgroup", "--system", "--quiet", "wsgi-fpm"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        shutil.rmtree(top, ignore_errors=True)
    # Purged: nothing of the package is left.
    for path in ("/usr/bin/wsgi-fpm", "/usr/lib/wsgi-fpm", "/etc/wsgi-fpm", "/var/lib/wsgi-fpm",
                 "/etc/systemd/system/multi-user.target.wants/wsgi-fpm.service",
                 "/etc/systemd/system/wsgi-fpm.service"):
        assert not os.path.lexists(path), path
