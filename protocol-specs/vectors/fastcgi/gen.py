#!/usr/bin/env python3
"""Writes the hand-built FastCGI vectors of this directory (see README.md).

Independent of the Rust encoder on purpose: these bytes are built here from
protocol-specs/fastcgi.md, so our encoder does not grade our decoder.
Run from anywhere: python3 gen.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, STDERR, DATA, GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = range(1, 12)


def rec(kind, rid, content=b"", pad=None, version=1):
    """One record; pad=None pads to 8 like nginx, else that many bytes."""
    if pad is None:
        pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBB", version, kind, rid, len(content), pad, 0) + content + b"\0" * pad


def length(n, four=False):
    if n < 128 and not four:
        return bytes([n])
    return struct.pack(">I", n | 0x80000000)


def pair(name, value, four_name=False, four_value=False):
    return length(len(name), four_name) + length(len(value), four_value) + name + value


def pairs(*kv):
    return b"".join(pair(k, v) for k, v in kv)


def begin(rid, role=1, keep=False, pad=None):
    return rec(BEGIN, rid, struct.pack(">HB5x", role, 1 if keep else 0), pad)


def end_request(rid, app=0, status=0):
    return rec(END, rid, struct.pack(">IB3x", app, status))


GET = pairs(
    (b"REQUEST_METHOD", b"GET"),
    (b"SCRIPT_NAME", b""),
    (b"PATH_INFO", b"/hello"),
    (b"QUERY_STRING", b"a=1"),
    (b"CONTENT_LENGTH", b""),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"),
)


def simple_get(rid, keep=False):
    return begin(rid, keep=keep) + rec(PARAMS, rid, GET) + rec(PARAMS, rid) + rec(STDIN, rid)


def bad_request_response(rid):
    body = b"Bad Request\n"
    head = (b"Status: 400 Bad Request\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    return rec(STDOUT, rid, head + body) + rec(STDOUT, rid) + end_request(rid)


VECTORS = {}
OUTPUTS = {}

# fastcgi.md §7.1: known names answered once, unknown ones left out.
VECTORS["get-values"] = rec(GET_VALUES, 0, pairs(
    (b"FCGI_MAX_CONNS", b""), (b"FCGI_UNKNOWN_NAME", b""), (b"FCGI_MAX_REQS", b""),
    (b"FCGI_MPXS_CONNS", b""), (b"FCGI_MAX_CONNS", b""))) + simple_get(1, keep=True)
# answered with Settings { max_conns: 10, max_reqs: 50, mpxs_conns: true }
OUTPUTS["get-values"] = rec(GET_VALUES_RESULT, 0, pairs(
    (b"FCGI_MAX_CONNS", b"10"), (b"FCGI_MAX_REQS", b"50"), (b"FCGI_MPXS_CONNS", b"1")))

# fastcgi.md §7.2, §3: unknown management type, an app-to-server type on a
# request id, an undefined type on a request id; then a normal request.
VECTORS["unknown-type"] = (rec(12, 0, b"abc", pad=5) + rec(STDOUT, 1, b"x") + rec(200, 7, b"")
                           + simple_get(1))
OUTPUTS["unknown-type"] = (rec(UNKNOWN_TYPE, 0, bytes([12]) + b"\0" * 7)
                           + rec(UNKNOWN_TYPE, 0, bytes([STDOUT]) + b"\0" * 7)
                           + rec(UNKNOWN_TYPE, 0, bytes([200]) + b"\0" * 7))

# fastcgi.md §5.1: 1/1, 1/4, 4/1, 4/4 lengths, a 4-byte encoding of a short
# length, the 127/128 boundary, NUL and 0xFF bytes in values.
NV = (pair(b"A", b"1")
      + pair(b"LONG_VALUE", b"v" * 128)
      + pair(b"N" * 200, b"short")
      + pair(b"M" * 130, b"w" * 300)
      + pair(b"FOUR_BYTE_SHORT", b"x", four_name=True, four_value=True)
      + pair(b"EDGE_127", b"e" * 127)
      + pair(b"BYTES", b"a\0b\xff")
      + pair(b"CONTENT_LENGTH", b"0")
      + pair(b"EMPTY", b""))
VECTORS["nv-lengths"] = begin(1) + rec(PARAMS, 1, NV) + rec(PARAMS, 1) + rec(STDIN, 1)

# fastcgi.md §2.2: the maximum padding on every record type we read.
VECTORS["padding-255"] = (begin(1, pad=255) + rec(PARAMS, 1, pairs((b"CONTENT_LENGTH", b"3")), pad=255)
                          + rec(PARAMS, 1, pad=255) + rec(STDIN, 1, b"abc", pad=255)
                          + rec(STDIN, 1, pad=255))

# fastcgi.md §6.1: the PARAMS stream cut inside a 4-byte length prefix,
# then inside a value, then a one-byte record.
SPLIT = pairs((b"REQUEST_METHOD", b"POST"), (b"HTTP_X_LONG", b"L" * 200), (b"CONTENT_LENGTH", b"5"))
cut1 = len(pair(b"REQUEST_METHOD", b"POST")) + 3      # inside the 4-byte value length
cut2 = cut1 + 30                                        # inside the long value
VECTORS["params-split-mid-pair"] = (begin(1) + rec(PARAMS, 1, SPLIT[:cut1]) + rec(PARAMS, 1, SPLIT[cut1:cut2])
                                    + rec(PARAMS, 1, SPLIT[cut2:-1]) + rec(PARAMS, 1, SPLIT[-1:])
                                    + rec(PARAMS, 1) + rec(STDIN, 1, b"hello") + rec(STDIN, 1))

# fastcgi.md §8.3: ABORT in the middle of a declared 10-byte body.
VECTORS["abort"] = (begin(1, keep=True) + rec(PARAMS, 1, pairs((b"CONTENT_LENGTH", b"10")))
                    + rec(PARAMS, 1) + rec(STDIN, 1, b"abcd") + rec(ABORT, 1) + rec(STDIN, 1, b"efg"))

# fastcgi.md §8.2: two ids with every stream interleaved.
P1 = pairs((b"REQUEST_METHOD", b"POST"), (b"CONTENT_LENGTH", b"6"), (b"X_ID", b"one"))
P2 = pairs((b"REQUEST_METHOD", b"GET"), (b"X_ID", b"two"))
VECTORS["multiplexed"] = (begin(1, keep=True) + begin(2, keep=True)
                          + rec(PARAMS, 2, P2[:5]) + rec(PARAMS, 1, P1) + rec(PARAMS, 2, P2[5:])
                          + rec(PARAMS, 1) + rec(STDIN, 1, b"abc") + rec(PARAMS, 2)
                          + rec(STDIN, 2) + rec(STDIN, 1, b"def") + rec(STDIN, 1))

# fastcgi.md §4.1: FILTER refused; its PARAMS, DATA and STDIN are ignored;
# the kept connection then serves a responder request on the same id.
VECTORS["filter-role"] = (begin(1, role=3, keep=True) + rec(PARAMS, 1, pairs((b"FCGI_DATA_LENGTH", b"4")))
                          + rec(PARAMS, 1) + rec(STDIN, 1) + rec(DATA, 1, b"data") + rec(DATA, 1)
                          + simple_get(1, keep=True))
OUTPUTS["filter-role"] = rec(STDOUT, 1) + end_request(1, 0, 3)

# fastcgi.md §6.2: a non-numeric CONTENT_LENGTH is answered with 400 by the
# codec; the body that follows is drained; the kept connection goes on.
VECTORS["content-length-invalid"] = (begin(1, keep=True)
                                     + rec(PARAMS, 1, pairs((b"REQUEST_METHOD", b"POST"), (b"CONTENT_LENGTH", b"12x")))
                                     + rec(PARAMS, 1) + rec(STDIN, 1, b"twelve bytes") + rec(STDIN, 1)
                                     + simple_get(1, keep=True))
OUTPUTS["content-length-invalid"] = bad_request_response(1)

# fastcgi.md §6.2: two different numbers.
VECTORS["content-length-conflict"] = (begin(1) + rec(PARAMS, 1, pairs((b"CONTENT_LENGTH", b"5"), (b"CONTENT_LENGTH", b"6")))
                                      + rec(PARAMS, 1) + rec(STDIN, 1, b"12345") + rec(STDIN, 1))
OUTPUTS["content-length-conflict"] = bad_request_response(1)

# fastcgi.md §6.2: body longer / shorter than CONTENT_LENGTH.
VECTORS["body-too-long"] = (begin(1) + rec(PARAMS, 1, pairs((b"CONTENT_LENGTH", b"3"))) + rec(PARAMS, 1)
                            + rec(STDIN, 1, b"ab") + rec(STDIN, 1, b"cd") + rec(STDIN, 1))
VECTORS["body-too-short"] = (begin(1) + rec(PARAMS, 1, pairs((b"CONTENT_LENGTH", b"10"))) + rec(PARAMS, 1)
                             + rec(STDIN, 1, b"abcd") + rec(STDIN, 1))

# fastcgi.md §8.1: BEGIN for a live id.
VECTORS["duplicate-begin"] = begin(1) + rec(PARAMS, 1, GET) + begin(1)

# fastcgi.md §2.4: version 2, and an HTTP request sent to a FastCGI port.
VECTORS["bad-version"] = rec(BEGIN, 1, struct.pack(">HB5x", 1, 0), version=2)
VECTORS["http-request"] = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"

# fastcgi.md §5.2: a 31-bit value length with a few bytes behind it
# (CVE-2025-23016 shape): an error naming the offset, no allocation.
VECTORS["nv-huge-length"] = (begin(1) + rec(PARAMS, 1, pair(b"A", b"1") + b"\x01\xff\xff\xff\xff" + b"Bxyz")
                             + rec(PARAMS, 1))

# fastcgi.md §10: an authorizer with no STDIN at all, then the connection
# is closed by us (keep-conn 0).
VECTORS["authorizer"] = begin(1, role=2) + rec(PARAMS, 1, pairs((b"REMOTE_USER", b"user"), (b"FCGI_APACHE_ROLE", b"AUTHORIZER"))) + rec(PARAMS, 1)

for name, data in VECTORS.items():
    with open(os.path.join(HERE, name + ".bin"), "wb") as f:
        f.write(data)
for name, data in OUTPUTS.items():
    with open(os.path.join(HERE, name + ".out.bin"), "wb") as f:
        f.write(data)
print("wrote %d vectors, %d expected outputs" % (len(VECTORS), len(OUTPUTS)))
