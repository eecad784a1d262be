"""A cheap client for bench/count: one GET per connection over FastCGI, SCGI
or uwsgi on a Unix socket, as nginx sends it without connection reuse.

Written from the protocol texts (protocol-specs/), standard library only,
and kept outside any counted process: requests are encoded once and reused.
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


def cgi_params(path="/hello"):
    """What nginx's stock *_params send for `GET path` from curl, in order."""
    return [
        ("QUERY_STRING", ""), ("REQUEST_METHOD", "GET"), ("CONTENT_TYPE", ""), ("CONTENT_LENGTH", ""),
        ("SCRIPT_NAME", path), ("REQUEST_URI", path), ("DOCUMENT_URI", path),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"), ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"), ("GATEWAY_INTERFACE", "CGI/1.1"), ("SERVER_SOFTWARE", "nginx/1.22.1"),
        ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "41234"), ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "8080"), ("SERVER_NAME", "localhost"), ("REDIRECT_STATUS", "200"),
        ("HTTP_HOST", "localhost:8080"), ("HTTP_USER_AGENT", "curl/7.88.1"), ("HTTP_ACCEPT", "*/*"),
    ]


def _fcgi_record(rtype, content=b"", req_id=1):
    return struct.pack(">BBHHBB", 1, rtype, req_id, len(content), 0, 0) + content


def _fcgi_nv(name, value):
    out = b""
    for n in (len(name), len(value)):
        out += bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return out + name + value


def encode(protocol, params):
    """The bytes of one whole request (no body)."""
    pairs = [(k.encode(), v.encode()) for k, v in params]
    if protocol == "fastcgi":
        block = b"".join(_fcgi_nv(k, v) for k, v in pairs)
        return (_fcgi_record(FCGI_BEGIN_REQUEST, struct.pack(">HB5x", FCGI_RESPONDER, 0))
                + _fcgi_record(FCGI_PARAMS, block) + _fcgi_record(FCGI_PARAMS)
                + _fcgi_record(FCGI_STDIN))
    if protocol == "scgi":
        # SCGI: CONTENT_LENGTH first and SCGI=1; the netstring of NUL-terminated pairs.
        pairs = [(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1")] + [p for p in pairs if p[0] != b"CONTENT_LENGTH"]
        block = b"".join(k + b"\0" + v + b"\0" for k, v in pairs)
        return str(len(block)).encode() + b":" + block + b","
    if protocol == "uwsgi":
        block = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v for k, v in pairs)
        return struct.pack("<BHB", 0, len(block), 0) + block
    raise ValueError("unknown protocol %r" % protocol)


def _fcgi_stdout(data):
    """The STDOUT stream of a whole FastCGI response, or None if END_REQUEST is not in yet."""
    out, i = [], 0
    while i + 8 <= len(data):
        _, rtype, _, clen, plen, _ = struct.unpack(">BBHHBB", data[i:i + 8])
        if i + 8 + clen + plen > len(data):
            return None
        if rtype == FCGI_STDOUT:
            out.append(data[i + 8:i + 8 + clen])
        elif rtype == FCGI_END_REQUEST:
            return b"".join(out)
        i += 8 + clen + plen
    return None


def request(protocol, path, raw, timeout=60.0):
    """Sends `raw` on a new connection to the Unix socket `path`; the CGI-style response (head and body)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if protocol == "fastcgi" and _fcgi_stdout(data) is not None:
                break
    finally:
        s.close()
    if protocol == "fastcgi":
        body = _fcgi_stdout(data)
        if body is None:
            raise OSError("FastCGI response without END_REQUEST (%d bytes)" % len(data))
        return body
    return data
