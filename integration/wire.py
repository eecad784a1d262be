"""Minimal FastCGI, SCGI and uwsgi clients written from the protocol texts,
so the tests can talk to wsgi-fpm without a front end (readiness probes,
malformed input, stalled clients, memory on big uploads).

Independent of wsgi-fpm's own code on purpose: our encoder must not grade our
decoder. Only the standard library.
"""
import socket
import struct
from urllib.parse import unquote_to_bytes

# FastCGI 1.0, section 8: record types and roles.
FCGI_BEGIN_REQUEST = 1
FCGI_ABORT_REQUEST = 2
FCGI_END_REQUEST = 3
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_STDOUT = 6
FCGI_STDERR = 7
FCGI_RESPONDER = 1
FCGI_KEEP_CONN = 1


def b(x):
    return x if isinstance(x, bytes) else str(x).encode("latin-1")


# --------------------------------------------------------------- encoding

def fcgi_record(rtype, req_id, content=b"", padding=0):
    return struct.pack(">BBHHBB", 1, rtype, req_id, len(content), padding, 0) + content + b"\0" * padding


def fcgi_nv(name, value):
    name, value = b(name), b(value)
    out = b""
    for n in (len(name), len(value)):
        out += bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return out + name + value


def fcgi_stream(rtype, req_id, data, chunk=65535):
    """A whole stream: records of at most `chunk` bytes, then the empty record."""
    out = []
    for i in range(0, len(data), chunk):
        out.append(fcgi_record(rtype, req_id, data[i:i + chunk]))
    out.append(fcgi_record(rtype, req_id))
    return b"".join(out)


def fcgi_begin(req_id=1, keep_conn=False, role=FCGI_RESPONDER):
    return fcgi_record(FCGI_BEGIN_REQUEST, req_id,
                       struct.pack(">HB5x", role, FCGI_KEEP_CONN if keep_conn else 0))


def fcgi_params_block(params, req_id=1):
    return fcgi_stream(FCGI_PARAMS, req_id, b"".join(fcgi_nv(k, v) for k, v in params))


def scgi_head(params):
    """Netstring of NUL-terminated pairs; caller puts CONTENT_LENGTH first."""
    block = b"".join(b(k) + b"\0" + b(v) + b"\0" for k, v in params)
    return str(len(block)).encode() + b":" + block + b","


def uwsgi_head(params, modifier1=0, modifier2=0):
    block = b""
    for k, v in params:
        k, v = b(k), b(v)
        block += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    return struct.pack("<BHB", modifier1, len(block), modifier2) + block


def cgi_params(method="GET", path="/", query="", headers=(), body_len=None,
               scheme="http", extra=(), protocol="fastcgi"):
    """The CGI variables a front end would send for a request.

    `path` is the raw (percent-encoded) path; PATH_INFO carries the decoded
    form, SCRIPT_NAME is empty, as nginx's uwsgi_params does; wsgi-fpm is to
    recompute both from REQUEST_URI anyway.
    """
    uri = path + ("?" + query if query else "")
    params = []
    if protocol == "scgi":
        params.append(("CONTENT_LENGTH", str(body_len or 0)))
        params.append(("SCGI", "1"))
    elif body_len is not None:
        params.append(("CONTENT_LENGTH", str(body_len)))
    params += [
        ("REQUEST_METHOD", method),
        ("REQUEST_URI", uri),
        ("QUERY_STRING", query),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", unquote_to_bytes(path)),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "40000"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_SCHEME", scheme),
        ("HTTP_HOST", "127.0.0.1"),
    ]
    for name, value in headers:
        params.append(("HTTP_" + name.upper().replace("-", "_"), value))
    params += list(extra)
    return params


# --------------------------------------------------------------- responses

class Response:
    def __init__(self, status, reason, headers, body, raw, end=None, stderr=b""):
        self.status = status
        self.reason = reason
        self.headers = headers          # list of (name, value) str pairs
        self.body = body
        self.raw = raw                  # the whole response stream
        self.end = end                  # FastCGI: (app_status, protocol_status) or None
        self.stderr = stderr

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def __repr__(self):
        return "<Response %s %r headers=%r body=%d bytes>" % (
            self.status, self.reason, self.headers, len(self.body))


def parse_head(raw, form):
    """Split a CGI-form ('cgi') or HTTP-form ('http') response."""
    sep = raw.find(b"\r\n\r\n")
    seplen = 4
    lf = raw.find(b"\n\n")
    if sep < 0 or (0 <= lf < sep):
        sep, seplen = lf, 2
    if sep < 0:
        raise ValueError("no end of response head in %r" % raw[:200])
    lines = raw[:sep].decode("latin-1").replace("\r\n", "\n").split("\n")
    body = raw[sep + seplen:]
    status, reason = 200, "OK"
    if form == "http":
        first = lines.pop(0)
        if not first.startswith("HTTP/1."):
            raise ValueError("uwsgi response must start with an HTTP status line: %r" % first)
        parts = first.split(" ", 2)
        status, reason = int(parts[1]), (parts[2] if len(parts) > 2 else "")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    if form == "cgi":
        for name, value in headers:
            if name.lower() == "status":
                code, _, reason = value.partition(" ")
                status = int(code)
    return status, reason, headers, body


# --------------------------------------------------------------- transports

def recv_all(sock, limit=1 << 31):
    chunks = []
    n = 0
    while n < limit:
        data = sock.recv(1 << 16)
        if not data:
            break
        chunks.append(data)
        n += len(data)
    return b"".join(chunks)


def connect(addr, timeout=30.0):
    host, port = addr
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send_body(sock, body, wrap):
    """Send `body` (bytes or an iterable of bytes) through `wrap` (framing)."""
    if isinstance(body, (bytes, bytearray)):
        body = [bytes(body)] if body else []
    for piece in body:
        if piece:
            sock.sendall(wrap(piece))


class FcgiReader:
    """Reads FastCGI records for one request id off a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("connection closed by wsgi-fpm mid-record (%d buffered bytes)" % len(self.buf))
            self.buf += data

    def record(self):
        self._fill(8)
        version, rtype, rid, clen, plen, _ = struct.unpack(">BBHHBB", self.buf[:8])
        self._fill(8 + clen + plen)
        content = self.buf[8:8 + clen]
        self.buf = self.buf[8 + clen + plen:]
        return version, rtype, rid, content

    def response(self, req_id=1):
        out, err = [], []
        while True:
            version, rtype, rid, content = self.record()
            if rid != req_id:
                continue
            if rtype == FCGI_STDOUT:
                out.append(content)
            elif rtype == FCGI_STDERR:
                err.append(content)
            elif rtype == FCGI_END_REQUEST:
                app_status, proto_status = struct.unpack(">IB3x", content)
                return b"".join(out), b"".join(err), (app_status, proto_status)


def fcgi_request(addr, params, body=b"", keep_conn=False, sock=None, req_id=1, timeout=30.0):
    """One FastCGI RESPONDER request; returns a Response (raises on a cut stream)."""
    own = sock is None
    s = sock or connect(addr, timeout)
    try:
        s.sendall(fcgi_begin(req_id, keep_conn) + fcgi_params_block(params, req_id))
        send_body(s, body, lambda p: b"".join(
            fcgi_record(FCGI_STDIN, req_id, p[i:i + 65535]) for i in range(0, len(p), 65535)))
        s.sendall(fcgi_record(FCGI_STDIN, req_id))
        out, err, end = FcgiReader(s).response(req_id)
        status, reason, headers, rbody = parse_head(out, "cgi")
        return Response(status, reason, headers, rbody, out, end, err)
    finally:
        if own:
            s.close()


def scgi_request(addr, params, body=b"", timeout=30.0):
    s = connect(addr, timeout)
    try:
        s.sendall(scgi_head(params))
        send_body(s, body, lambda p: p)
        raw = recv_all(s)
    finally:
        s.close()
    status, reason, headers, rbody = parse_head(raw, "cgi")
    return Response(status, reason, headers, rbody, raw)


def uwsgi_request(addr, params, body=b"", timeout=30.0):
    s = connect(addr, timeout)
    try:
        s.sendall(uwsgi_head(params))
        send_body(s, body, lambda p: p)
        raw = recv_all(s)
    finally:
        s.close()
    status, reason, headers, rbody = parse_head(raw, "http")
    return Response(status, reason, headers, rbody, raw)


def request(protocol, addr, method="GET", path="/", query="", headers=(), body=b"",
            body_len=None, extra=(), timeout=30.0, scheme="http"):
    """A request in the given protocol with front-end-like params."""
    if body_len is None and (body or method in ("POST", "PUT")):
        body_len = len(body) if isinstance(body, (bytes, bytearray)) else None
    params = cgi_params(method, path, query, headers, body_len, scheme, extra, protocol)
    if protocol == "fastcgi":
        return fcgi_request(addr, params, body, timeout=timeout)
    if protocol == "scgi":
        return scgi_request(addr, params, body, timeout=timeout)
    if protocol == "uwsgi":
        return uwsgi_request(addr, params, body, timeout=timeout)
    raise ValueError(protocol)


def head_bytes(protocol, params):
    """The bytes a client sends before the body, in the given protocol."""
    if protocol == "fastcgi":
        return fcgi_begin() + fcgi_params_block(params)
    if protocol == "scgi":
        return scgi_head(params)
    if protocol == "uwsgi":
        return uwsgi_head(params)
    raise ValueError(protocol)


def wait_closed(sock, timeout):
    """Read until the peer closes; returns (closed, bytes received).

    A reset counts as closed. `closed` is False if `timeout` seconds passed
    first (an overall deadline, not per read).
    """
    import time
    deadline = time.monotonic() + timeout
    got = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, got
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                return True, got
            got += data
    except ConnectionError:
        return True, got
    except socket.timeout:
        return False, got
