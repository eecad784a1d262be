"""Bad input, stalled clients, timeouts and memory, straight to wsgi-fpm's
sockets (SPEC §2 "Bad input never crashes…", "fifty stalled clients", §3
"wsgi.input streams")."""
import hashlib
import json
import socket
import time
from pathlib import Path

import pytest

import wire
from harness import APPS

ROUTER = APPS / "router.py"

#: How fast wsgi-fpm must close a connection that sent garbage.
CLOSE_WITHIN = 5.0


@pytest.fixture(scope="module")
def limited(spawn_module):
    """Small parameter limit; default socket timeout, so a close is not a timeout."""
    return spawn_module("limited", ROUTER, "--processes", "1", "--threads", "2",
                        "--max-params-size", "4096")


@pytest.fixture(scope="module")
def narrow(spawn_module):
    """Two Python threads only: stalled clients must not hold them."""
    return spawn_module("narrow", ROUTER, "--processes", "1", "--threads", "2")


@pytest.fixture(scope="module")
def impatient(spawn_module):
    return spawn_module("impatient", ROUTER, "--processes", "1", "--threads", "2",
                        "--socket-timeout", "2")


def assert_still_serves(backend, protocol):
    r = backend.request(protocol, path="/hello", timeout=10)
    assert (r.status, r.body) == (200, b"Hello, world!"), r


GARBAGE = {
    # An HTTP request sent to the FastCGI port: version byte 'G', not 1.
    "fastcgi": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 64,
    # Not a netstring: SCGI needs ASCII digits then ':'.
    "scgi": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    # modifier1 99 is no WSGI request; a well-formed size follows.
    "uwsgi": b"\x63\x04\x00\x00" + b"\x01\x00a\x00\x00" + b"\0" * 64,
}


def test_garbage_header_closes_the_connection_and_service_goes_on(limited, protocol):
    sock = wire.connect(limited.addr(protocol))
    try:
        sock.sendall(GARBAGE[protocol])
        closed, got = wire.wait_closed(sock, CLOSE_WITHIN)
    finally:
        sock.close()
    assert closed, "wsgi-fpm kept a %s connection open after garbage (%r)" % (protocol, got[:200])
    assert b"REQUEST_METHOD" not in got, "garbage reached the application"
    assert_still_serves(limited, protocol)


def test_scgi_looking_bytes_on_the_uwsgi_port_close_the_connection(limited):
    # lighttpd's config trap (BEHAVIOUR.md §3.3): SCGI sent to a uwsgi port.
    sock = wire.connect(limited.addr("uwsgi"))
    try:
        sock.sendall(wire.scgi_head(wire.cgi_params(protocol="scgi")))
        closed, got = wire.wait_closed(sock, CLOSE_WITHIN)
    finally:
        sock.close()
    assert closed, "uwsgi connection left hanging on an SCGI request"
    assert_still_serves(limited, "uwsgi")


def test_params_over_max_params_size_close_the_connection(limited, protocol):
    params = wire.cgi_params("GET", "/big", headers=[("X-Big", "a" * 8000)], protocol=protocol)
    sock = wire.connect(limited.addr(protocol))
    try:
        data = wire.head_bytes(protocol, params)
        if protocol == "fastcgi":
            data += wire.fcgi_record(wire.FCGI_STDIN, 1)
        try:
            sock.sendall(data)
        except ConnectionError:
            pass  # closed while we were still sending: fine
        closed, got = wire.wait_closed(sock, CLOSE_WITHIN)
    finally:
        sock.close()
    assert closed, "a %s request with 8 KB of params stayed open under --max-params-size 4096" % protocol
    assert b"REQUEST_METHOD" not in got, "an oversized parameter block reached the application"
    assert_still_serves(limited, protocol)


def _half_head(protocol):
    params = wire.cgi_params("GET", "/hello", protocol=protocol)
    data = wire.head_bytes(protocol, params)
    return data[: len(data) // 2]


def test_fifty_stalled_clients_do_not_delay_a_normal_request(narrow, protocol):
    stalled = []
    try:
        for _ in range(50):
            s = wire.connect(narrow.addr(protocol))
            s.sendall(_half_head(protocol))
            stalled.append(s)
        time.sleep(0.3)
        t0 = time.monotonic()
        r = narrow.request(protocol, path="/hello", timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        for s in stalled:
            s.close()
    assert (r.status, r.body) == (200, b"Hello, world!"), r
    assert elapsed < 2.0, "a normal request took %.2f s behind 50 stalled clients" % elapsed


def test_socket_timeout_closes_a_stalled_connection(impatient, protocol):
    sock = wire.connect(impatient.addr(protocol))
    try:
        sock.sendall(_half_head(protocol))
        t0 = time.monotonic()
        closed, _ = wire.wait_closed(sock, 15)
        elapsed = time.monotonic() - t0
    finally:
        sock.close()
    assert closed, "--socket-timeout 2 did not close a stalled connection within 15 s"
    assert 1.0 <= elapsed <= 10.0, "closed after %.2f s with --socket-timeout 2" % elapsed
    assert_still_serves(impatient, protocol)


# ------------------------------------------------------------------ memory

UPLOAD_MIB = 256
#: Allowed growth of any one wsgi-fpm process's peak RSS during the upload.
RSS_GROWTH_LIMIT = 64 * 1024 * 1024


def _hwm(pids):
    """Peak resident set (VmHWM) of each pid, in bytes."""
    out = {}
    for pid in pids:
        try:
            for line in Path("/proc/%d/status" % pid).read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[pid] = int(line.split()[1]) * 1024
        except OSError:
            pass
    return out


def test_large_upload_does_not_grow_any_process_by_its_size(spawn, protocol):
    b = spawn("memory-" + protocol, ROUTER, "--processes", "1", "--threads", "2")
    assert_still_serves(b, protocol)  # workers are up and have served once
    pids = [b.pid] + b.proc.descendants()
    before = _hwm(pids)
    piece = hashlib.sha256(b"piece").digest() * 32768  # 1 MiB
    expected = hashlib.sha256()
    for _ in range(UPLOAD_MIB):
        expected.update(piece)
    size = UPLOAD_MIB * len(piece)
    r = b.request(protocol, method="POST", path="/upload", body=(piece for _ in range(UPLOAD_MIB)),
                  body_len=size, timeout=120)
    assert r.status == 200, r
    got = json.loads(r.body)
    assert (got["length"], got["sha256"]) == (size, expected.hexdigest())
    after = _hwm(pids)
    growth = {pid: after[pid] - before[pid] for pid in before if pid in after}
    worst = max(growth.values())
    assert worst < RSS_GROWTH_LIMIT, "peak RSS grew by %d MiB during a %d MiB upload: %r" % (
        worst >> 20, UPLOAD_MIB, {p: g >> 20 for p, g in growth.items()})
