"""A cheap client for bench/count: one request per connection over FastCGI,
SCGI, uwsgi or HTTP/1.1 on a Unix socket, as nginx sends it without
connection reuse: a GET, or a POST carrying a body.

Written from the protocol texts (protocol-specs/) and the front-end captures
(../shared/frontends/), standard library only, and kept outside any counted
process: requests are encoded once and reused.
"""
import socket
import struct

# FastCGI 1.0, section 8.
FCGI_BEGIN_REQUEST = 1
FCGI_END_REQUEST = 3
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_STDOUT = 6
FCGI_RESPONDER = 1
#: BEGIN_REQUEST's flag: the server keeps the connection after the answer.
FCGI_KEEP_CONN = 1
#: nginx sends a buffered request body in STDIN records of 32768 bytes
#: (captured: ../shared/frontends/BEHAVIOUR.md, "record sizes").
FCGI_STDIN_RECORD = 32768

PROTOCOLS = ("fastcgi", "scgi", "uwsgi", "http")
#: The Content-Type of a POST's body.
BODY_TYPE = "application/octet-stream"


def body_of(size):
    """`size` bytes of a fixed pattern (every byte value in turn)."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def _body_params(body_size):
    """REQUEST_METHOD, CONTENT_TYPE, CONTENT_LENGTH as nginx sets them (empty on a GET)."""
    if body_size:
        return "POST", BODY_TYPE, str(body_size)
    return "GET", "", ""


def _body_headers(body_size):
    """The request's own Content-Type and Content-Length headers, which nginx
    passes on as HTTP_CONTENT_TYPE/HTTP_CONTENT_LENGTH too (captured)."""
    if not body_size:
        return []
    return [("HTTP_CONTENT_LENGTH", str(body_size)), ("HTTP_CONTENT_TYPE", BODY_TYPE)]


def cgi_params(path="/hello", body_size=0):
    """What nginx's stock fastcgi_params send for `GET path` from curl (or a
    POST of body_size bytes), in order."""
    method, ctype, clen = _body_params(body_size)
    return [
        ("QUERY_STRING", ""), ("REQUEST_METHOD", method), ("CONTENT_TYPE", ctype), ("CONTENT_LENGTH", clen),
        ("SCRIPT_NAME", path), ("REQUEST_URI", path), ("DOCUMENT_URI", path),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"), ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"), ("GATEWAY_INTERFACE", "CGI/1.1"), ("SERVER_SOFTWARE", "nginx/1.22.1"),
        ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "41234"), ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "8080"), ("SERVER_NAME", "localhost"), ("REDIRECT_STATUS", "200"),
        ("HTTP_HOST", "localhost:8080"), ("HTTP_USER_AGENT", "curl/7.88.1"), ("HTTP_ACCEPT", "*/*"),
    ] + _body_headers(body_size)


def uwsgi_params(path="/hello", body_size=0):
    """What nginx's stock uwsgi_params send (/etc/nginx/uwsgi_params): no
    SCRIPT_NAME, PATH_INFO = $document_uri, in order."""
    method, ctype, clen = _body_params(body_size)
    return [
        ("QUERY_STRING", ""), ("REQUEST_METHOD", method), ("CONTENT_TYPE", ctype), ("CONTENT_LENGTH", clen),
        ("REQUEST_URI", path), ("PATH_INFO", path), ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "41234"), ("SERVER_PORT", "8080"),
        ("SERVER_NAME", "localhost"),
        ("HTTP_HOST", "localhost:8080"), ("HTTP_USER_AGENT", "curl/7.88.1"), ("HTTP_ACCEPT", "*/*"),
    ] + _body_headers(body_size)


def params(protocol, path="/hello", body_size=0):
    """The variables a front end sends over `protocol` (HTTP: the headers are taken from them)."""
    return uwsgi_params(path, body_size) if protocol == "uwsgi" else cgi_params(path, body_size)


def _fcgi_record(rtype, content=b"", req_id=1, pad=False):
    padding = (-len(content) % 8) if pad else 0
    return struct.pack(">BBHHBB", 1, rtype, req_id, len(content), padding, 0) + content + b"\0" * padding


def _fcgi_nv(name, value):
    out = b""
    for n in (len(name), len(value)):
        out += bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return out + name + value


def _http(pairs, body):
    """An HTTP/1.1 request as curl sends it, with Connection: close."""
    env = dict(pairs)
    head = [b"%s %s HTTP/1.1" % (env[b"REQUEST_METHOD"], env[b"REQUEST_URI"])]
    for k, v in pairs:
        if k.startswith(b"HTTP_") and k not in (b"HTTP_CONTENT_LENGTH", b"HTTP_CONTENT_TYPE"):
            head.append(k[5:].replace(b"_", b"-").title() + b": " + v)
    if body:
        head += [b"Content-Type: " + env[b"CONTENT_TYPE"], b"Content-Length: %d" % len(body)]
    head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def encode(protocol, params, body=b"", keep_conn=False):
    """The bytes of one whole request, `body` included; `keep_conn`
    (FastCGI only) asks the server to keep the connection, as nginx's
    `fastcgi_keep_conn on` does."""
    pairs = [(k.encode(), v.encode()) for k, v in params]
    if protocol == "fastcgi":
        block = b"".join(_fcgi_nv(k, v) for k, v in pairs)
        stdin = b"".join(_fcgi_record(FCGI_STDIN, body[i:i + FCGI_STDIN_RECORD], pad=True)
                         for i in range(0, len(body), FCGI_STDIN_RECORD))
        return (_fcgi_record(FCGI_BEGIN_REQUEST, struct.pack(">HB5x", FCGI_RESPONDER,
                                                                 FCGI_KEEP_CONN if keep_conn else 0))
                + _fcgi_record(FCGI_PARAMS, block) + _fcgi_record(FCGI_PARAMS)
                + stdin + _fcgi_record(FCGI_STDIN))
    if protocol == "scgi":
        # SCGI: CONTENT_LENGTH first and SCGI=1; the netstring of NUL-terminated pairs; the body.
        pairs = ([(b"CONTENT_LENGTH", b"%d" % len(body)), (b"SCGI", b"1")]
                 + [p for p in pairs if p[0] != b"CONTENT_LENGTH"])
        block = b"".join(k + b"\0" + v + b"\0" for k, v in pairs)
        return str(len(block)).encode() + b":" + block + b"," + body
    if protocol == "uwsgi":
        # The vars block, then the raw body.
        block = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v for k, v in pairs)
        return struct.pack("<BHB", 0, len(block), 0) + block + body
    if protocol == "http":
        return _http(pairs, body)
    raise ValueError("unknown protocol %r" % protocol)


def _fcgi_answer(data):
    """A whole FastCGI answer to request 1 (the one `encode` sends) at the
    start of `data`: its STDOUT stream and the offset just past its
    END_REQUEST, or None if END_REQUEST is not in yet. A record of another
    request, or an END_REQUEST saying the request did not complete, is an
    error."""
    out, i = [], 0
    while i + 8 <= len(data):
        _, rtype, rid, clen, plen, _ = struct.unpack(">BBHHBB", data[i:i + 8])
        end = i + 8 + clen + plen
        if end > len(data):
            return None
        if rid != 1:
            raise OSError("a record of request %d in the answer to request 1" % rid)
        if rtype == FCGI_STDOUT:
            out.append(data[i + 8:i + 8 + clen])
        elif rtype == FCGI_END_REQUEST:
            _, protocol_status = struct.unpack(">IB3x", data[i + 8:i + 16])
            if protocol_status != 0:
                raise OSError("END_REQUEST with protocol status %d" % protocol_status)
            return b"".join(out), end
        i = end
    return None


class KeptFastCGI:
    """One FastCGI connection to the Unix socket `path`, kept for request
    after request (`encode(..., keep_conn=True)`)."""

    def __init__(self, path, timeout=60.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def request(self, raw):
        """Sends `raw`; the STDOUT stream of its answer (`_fcgi_answer`),
        after which nothing may come before the next request is sent."""
        self.sock.sendall(raw)
        data = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("the server closed a kept FastCGI connection (%d bytes of an answer)" % len(data))
            data += chunk
            answer = _fcgi_answer(data)
            if answer is not None:
                body, end = answer
                if end != len(data):
                    raise OSError("%d bytes after END_REQUEST on a kept connection" % (len(data) - end))
                return body

    def close(self):
        self.sock.close()


def request(protocol, path, raw, timeout=60.0):
    """Sends `raw` on a new connection to the Unix socket `path`; the response
    (CGI-style head and body; HTTP's with its status line), read until the
    server closes (FastCGI: until END_REQUEST)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(raw)
        data, answer = b"", None
        while answer is None:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if protocol == "fastcgi":
                answer = _fcgi_answer(data)
    finally:
        s.close()
    if protocol == "fastcgi":
        if answer is None:
            raise OSError("FastCGI response without END_REQUEST (%d bytes)" % len(data))
        return answer[0]
    return data
