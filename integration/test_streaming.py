"""Responses stream, and close() is called even when the client goes away (SPEC §3)."""
import http.client
import socket
import struct
import time
import uuid
from pathlib import Path

import pytest

import wire
from harness import HOST

#: How long close() may take to be called after the client went away. The
#: close-recording app would stream for 20 s on its own.
CLOSE_DEADLINE = 10.0


def test_first_chunk_arrives_well_before_the_generator_finishes(fe):
    route = fe.route("main")
    conn = http.client.HTTPConnection(HOST, route.port, timeout=30)
    try:
        t0 = time.monotonic()
        conn.request("GET", "/stream?delay=1.5&chunks=1")
        resp = conn.getresponse()
        assert resp.status == 200
        first = resp.read1(65536)
        t_first = time.monotonic() - t0
        rest = resp.read()
        t_all = time.monotonic() - t0
    finally:
        conn.close()
    assert first.startswith(b"first"), first
    assert b"later 0" in first + rest
    assert t_all >= 1.4, "the generator sleeps 1.5 s, yet all arrived after %.2f s" % t_all
    assert t_first < 1.0, "first chunk arrived only after %.2f s (all after %.2f s)" % (t_first, t_all)


def _wait_for(path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    return None


def test_close_is_called_when_the_client_disconnects_mid_stream(fe, run_dir):
    marker = Path(run_dir) / "tmp" / ("close-%s" % uuid.uuid4().hex)
    route = fe.route("main")
    sock = socket.create_connection((HOST, route.port), timeout=10)
    sock.sendall(("GET /closerec?marker=%s&seconds=20 HTTP/1.1\r\nHost: %s\r\n\r\n"
                  % (marker, HOST)).encode())
    got = b""
    while len(got) < 20000:
        data = sock.recv(65536)
        assert data, "front end closed before streaming: %r" % got[:300]
        got += data
    t0 = time.monotonic()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, don't drain
    sock.close()
    text = _wait_for(marker, CLOSE_DEADLINE)
    assert text is not None, "close() not called within %.0f s of the client going away" % CLOSE_DEADLINE
    assert text.startswith("closed after"), text
    print("%s: %s after %.2f s" % (fe.name, text.strip(), time.monotonic() - t0))


def test_close_is_called_when_the_front_end_connection_closes(stack, protocol, run_dir):
    marker = Path(run_dir) / "tmp" / ("close-%s" % uuid.uuid4().hex)
    b = stack.backend("main")
    params = wire.cgi_params("GET", "/closerec", "marker=%s&seconds=20" % marker, protocol=protocol)
    sock = wire.connect(b.addr(protocol))
    data = wire.head_bytes(protocol, params)
    if protocol == "fastcgi":
        data += wire.fcgi_record(wire.FCGI_STDIN, 1)
    sock.sendall(data)
    got = b""
    while len(got) < 20000:
        d = sock.recv(65536)
        assert d, "wsgi-fpm closed before streaming: %r" % got[:300]
        got += d
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    text = _wait_for(marker, CLOSE_DEADLINE)
    assert text is not None, "close() not called within %.0f s of the connection closing" % CLOSE_DEADLINE
