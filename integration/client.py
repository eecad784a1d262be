"""HTTP client helpers for talking to the front ends (standard library only)."""
import http.client
import socket
import time

from harness import HOST


class Reply:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers      # list of (name, value)
        self.body = body
        self.elapsed = elapsed

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def json(self):
        import json
        return json.loads(self.body)

    def __repr__(self):
        return "<Reply %s headers=%r body[:300]=%r>" % (self.status, self.headers, self.body[:300])


def request(port, method, path, headers=(), body=None, chunked=False, timeout=60.0):
    """One HTTP/1.1 request. `headers` may repeat names. A chunked `body` is an
    iterable of pieces, each sent as its own chunk."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if chunked:
            for piece in body:
                if piece:
                    conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        elif body:
            conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, resp.getheaders(), data, time.monotonic() - t0)
    finally:
        conn.close()


def get(port, path, **kw):
    return request(port, "GET", path, **kw)


def raw_exchange(port, data, timeout=30.0):
    """Send raw bytes, read until the server closes; returns (head, body) bytes."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.sendall(data)
        chunks = []
        while True:
            d = s.recv(65536)
            if not d:
                break
            chunks.append(d)
    finally:
        s.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body
