"""Inherited listening sockets (SPEC §2): fd 0 (mod_fcgid, lighttpd bin-path,
spawn-fcgi) and systemd socket activation (LISTEN_FDS / LISTEN_PID). An
option that names the descriptor gives its protocol; one no option names
speaks FastCGI."""
import os
import socket
import subprocess

import harness
import wire


def _listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((harness.HOST, 0))
    s.listen(16)
    return s


def _serve_until_answered(proc, protocol, addr, log):
    return harness.answer_when_up(proc, log, lambda: wire.request(protocol, addr, path="/inherited", timeout=5))


def _run(run_dir, args, name, **popen):
    log = os.path.join(run_dir, "wsgi-fpm", name + ".log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    cmd = [str(harness.wsgi_fpm_bin()), "--allow-root", *args, str(harness.APPS / "hello.py")]
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, **popen), log


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_listening_socket_on_fd_0_speaks_fastcgi(run_dir):
    sock = _listener()
    proc, log = _run(run_dir, [], "fd0", stdin=sock.fileno())
    try:
        r = _serve_until_answered(proc, "fastcgi", sock.getsockname(), log)
        assert r.status == 200 and r.body == b"Hello, world!", r
    finally:
        _stop(proc)
        sock.close()


def test_systemd_sockets_take_the_protocol_an_option_names_and_fastcgi_otherwise(run_dir):
    fcgi, scgi = _listener(), _listener()
    # systemd passes its sockets from fd 3 on and sets LISTEN_PID to the pid
    # of the process it execs; `exec` keeps the shell's pid for wsgi-fpm.
    setup = 'LISTEN_PID=$$ LISTEN_FDS=2 exec "$@"'

    def place_sockets():
        # Through spare copies, so that a socket already on fd 3 or 4 is
        # not overwritten before it is moved.
        spare = [os.dup(fcgi.fileno()), os.dup(scgi.fileno())]
        for target, fd in zip((3, 4), spare):
            os.dup2(fd, target)
    log = os.path.join(run_dir, "wsgi-fpm", "systemd.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    cmd = ["sh", "-c", setup, "sh", str(harness.wsgi_fpm_bin()), "--allow-root",
           "--scgi", "fd:4", str(harness.APPS / "hello.py")]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            preexec_fn=place_sockets, pass_fds=(3, 4))
    try:
        r = _serve_until_answered(proc, "scgi", scgi.getsockname(), log)
        assert r.status == 200 and r.body == b"Hello, world!", r
        r = _serve_until_answered(proc, "fastcgi", fcgi.getsockname(), log)
        assert r.status == 200 and r.body == b"Hello, world!", r
    finally:
        _stop(proc)
        fcgi.close()
        scgi.close()


def _system_bound():
    """The administrator's `net.ipv4.tcp_notsent_lowat`, if one was chosen."""
    try:
        with open("/proc/sys/net/ipv4/tcp_notsent_lowat") as f:
            value = int(f.read())
    except (OSError, ValueError):
        return None
    return value if value < 2**32 - 1 else None


def test_tcp_notsent_lowat_bounds_the_listener_as_configured(run_dir):
    # An inherited listener shares its socket with the process that made
    # it, so the option wsgi-fpm set is read back here.
    default = 0 if _system_bound() is not None else 16 * 1024
    for args, own, expected in [
        ([], None, default),
        ([], 4096, 4096),  # its owner's bound is kept
        (["--tcp-notsent-lowat", "8K"], 4096, 8192),
        (["--tcp-notsent-lowat", "0"], None, 0),
        (["--tcp-notsent-lowat", "0"], 4096, 0),  # back to the system's default
    ]:
        sock = _listener()
        if own is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, own)
        proc, log = _run(run_dir, args, "lowat", stdin=sock.fileno())
        try:
            r = _serve_until_answered(proc, "fastcgi", sock.getsockname(), log)
            assert r.status == 200, r
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == expected, (args, own)
        finally:
            _stop(proc)
            sock.close()
