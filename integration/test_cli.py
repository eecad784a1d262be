"""Command-line mistakes (issue: "exits non-zero with one clear line naming
it; an import error shows the Python traceback")."""
import socket
import subprocess
import time

from harness import APPS, HOST, free_ports, wsgi_fpm_bin


def run(*args, timeout=30):
    return subprocess.run([str(wsgi_fpm_bin()), "--allow-root", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_bad_address_names_the_option_and_the_address():
    r = run("--fastcgi", "no-such-thing", APPS / "hello.py")
    assert r.returncode != 0
    assert "--fastcgi" in r.stderr and "no-such-thing" in r.stderr, r.stderr


def test_missing_application_script_is_named():
    r = run("--fastcgi", "127.0.0.1:%d" % free_ports(1)[0], "/nonexistent/app.py")
    assert r.returncode != 0
    assert "/nonexistent/app.py" in r.stderr and "does not exist" in r.stderr, r.stderr


def test_no_listener_says_which_options_give_one():
    r = run(APPS / "hello.py")
    assert r.returncode != 0
    assert "--fastcgi" in r.stderr and "--http" in r.stderr, r.stderr


def test_with_need_app_an_application_that_fails_to_import_exits_with_its_traceback(tmp_path):
    app = tmp_path / "broken.py"
    app.write_text("import os\n\ndef helper():\n    raise ImportError('no module named frobnicate')\n\nhelper()\n")
    r = run("--need-app", "--fastcgi", "127.0.0.1:%d" % free_ports(1)[0], app)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" in r.stderr and str(app) in r.stderr, r.stderr
    assert "no module named frobnicate" in r.stderr, r.stderr
    assert "could not be loaded" in r.stderr, r.stderr


def test_with_need_app_a_missing_callable_is_named(tmp_path):
    app = tmp_path / "nocallable.py"
    app.write_text("x = 1\n")
    r = run("--need-app", "--fastcgi", "127.0.0.1:%d" % free_ports(1)[0], app)
    assert r.returncode == 1
    assert "no callable named 'application'" in r.stderr, r.stderr


def test_port_in_use_is_refused_with_the_address():
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = run("--fastcgi", "%s:%d" % (HOST, port), APPS / "hello.py")
    assert r.returncode != 0
    assert "cannot listen on fastcgi://%s:%d" % (HOST, port) in r.stderr, r.stderr


def test_check_prints_what_would_run_and_exits_zero():
    r = run("--check", "--uwsgi", "127.0.0.1:%d" % free_ports(1)[0], "--threads", "3", APPS / "hello.py")
    assert r.returncode == 0, r.stderr
    assert "hello.py" in r.stdout and "3 threads" in r.stdout and "uwsgi://" in r.stdout, r.stdout


def test_a_config_file_error_names_the_file_and_the_key(tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text('[pools.a]\napp = "%s"\nlisten = ["fastcgi://127.0.0.1:%d"]\nthreads = 0\n'
                    % (APPS / "hello.py", free_ports(1)[0]))
    r = run("--config", conf)
    assert r.returncode != 0
    assert "bad.toml" in r.stderr and "pools.a.threads" in r.stderr, r.stderr


def test_check_finds_a_missing_user_and_a_busy_port():
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = run("--check", "--fastcgi", "%s:%d" % (HOST, port), "--user", "no-such-user-here", APPS / "hello.py")
    assert r.returncode == 1
    assert "no-such-user-here" in r.stderr and "does not exist" in r.stderr, r.stderr
    assert "cannot listen on fastcgi://%s:%d" % (HOST, port) in r.stderr, r.stderr


def test_check_twice_imports_the_application_as_its_user(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_for_check\napplication = None\n")
    port = free_ports(1)[0]
    # -t alone checks paths and sockets, not imports.
    r = run("-t", "--fastcgi", "%s:%d" % (HOST, port), broken)
    assert r.returncode == 0, r.stderr
    r = run("-tt", "--fastcgi", "%s:%d" % (HOST, port), broken)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "no_such_module_for_check" in r.stderr and "Traceback" in r.stderr, r.stderr
    assert "pool main: the application did not load" in r.stderr, r.stderr
    # A good application (as nobody, with Debian's Python: a real switch).
    r = run("-tt", "--fastcgi", "%s:%d" % (HOST, port), "--user", "nobody",
            "--python", "/usr/bin/python3.11", APPS / "hello.py")
    assert r.returncode == 0, r.stderr
    assert "pool main:" in r.stdout and "hello.py" in r.stdout, r.stdout
    assert "loaded; not serving (check)" in r.stderr, r.stderr


def test_check_runs_each_interpreter_once_and_prints_its_version_and_prefix():
    python = "/usr/bin/python3.11"
    truth = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0]); print(sys.prefix)"],
                           capture_output=True, text=True, check=True).stdout.split("\n")
    r = run("--check", "--fastcgi", "127.0.0.1:%d" % free_ports(1)[0], "--python", python, APPS / "hello.py")
    assert r.returncode == 0, r.stderr
    assert "pool main: %s is Python %s, sys.prefix %s" % (python, truth[0], truth[1]) in r.stdout, r.stdout


def test_check_runs_the_interpreter_as_the_pools_user_only():
    import os
    import shutil
    if os.geteuid() != 0:
        return
    d = "/tmp/wsgi-fpm-check-%d" % os.getpid()
    shutil.rmtree(d, ignore_errors=True)
    os.mkdir(d)
    os.chmod(d, 0o777)
    record = os.path.join(d, "uids")
    open(record, "w").close()
    os.chmod(record, 0o666)
    wrapper = os.path.join(d, "python")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nid -u >> %s\nexec /usr/bin/python3.11 "$@"\n' % record)
    os.chmod(wrapper, 0o755)
    try:
        r = run("--check", "--fastcgi", "127.0.0.1:%d" % free_ports(1)[0], "--user", "nobody",
                "--python", wrapper, APPS / "hello.py")
        assert r.returncode == 0, r.stderr
        assert "is Python 3.11" in r.stdout, r.stdout
        assert open(record).read().split() == ["65534"], "ran once, as nobody"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_status_address_is_accepted_and_bound():
    port, status = free_ports(2)
    p = subprocess.Popen([str(wsgi_fpm_bin()), "--allow-root", "--fastcgi", "127.0.0.1:%d" % port,
                          "--status", "127.0.0.1:%d" % status, str(APPS / "hello.py")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert p.poll() is None, p.stdout.read().decode(errors="replace")
            try:
                with socket.create_connection((HOST, status), timeout=2) as c:
                    c.settimeout(10)
                    c.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    answer = b""
                    while chunk := c.recv(65536):
                        answer += chunk
                    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the status address was never bound"
                time.sleep(0.1)
    finally:
        p.terminate()
        p.wait(15)
