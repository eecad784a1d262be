"""The --http listener (SPEC §2): keep-alive, chunked request bodies and
`Expect: 100-continue`, for development and health checks."""
import hashlib
import http.client
import json
import os
import socket

import pytest

from harness import APPS, HOST, free_ports

ROUTER = APPS / "router.py"


@pytest.fixture(scope="module")
def http_port(spawn_module):
    port = free_ports(1)[0]
    spawn_module("http-listener", ROUTER, "--http", "%s:%d" % (HOST, port), protocols=("fastcgi",))
    return port


def test_keep_alive_serves_several_requests_on_one_connection(http_port):
    conn = http.client.HTTPConnection(HOST, http_port, timeout=10)
    try:
        conn.request("GET", "/hello")
        first = conn.getresponse()
        assert (first.status, first.read()) == (200, b"Hello, world!")
        sock = conn.sock
        for _ in range(5):
            conn.request("GET", "/hello")
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"Hello, world!")
        assert conn.sock is sock, "the connection was not kept alive"
    finally:
        conn.close()


def test_chunked_upload_reaches_the_application_whole(http_port):
    body = os.urandom(300_000)
    conn = http.client.HTTPConnection(HOST, http_port, timeout=30)
    try:
        pieces = (body[i:i + 7000] for i in range(0, len(body), 7000))
        conn.request("POST", "/upload", body=pieces, encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        r = conn.getresponse()
        got = json.loads(r.read())
    finally:
        conn.close()
    assert r.status == 200
    assert (got["length"], got["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


def test_expect_100_continue_is_answered_before_the_body_is_sent(http_port):
    body = b"x" * 5000
    with socket.create_connection((HOST, http_port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                  b"Expect: 100-continue\r\n\r\n" % len(body))
        interim = s.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        s.sendall(body)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(payload)["length"] == len(body)
