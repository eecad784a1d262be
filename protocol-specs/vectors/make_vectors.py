#!/usr/bin/env python3
"""Writes the hand-built SCGI and uwsgi vectors of protocol-specs/vectors/.

Each vector is built here byte by byte from the rules in scgi.md / uwsgi.md,
not by wsgi-fpm's own code, so the decoder is not graded by its own encoder.
Run from anywhere: python3 protocol-specs/vectors/make_vectors.py
The expected outcome of each file is in README.md and in tests/proto_*.rs.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(proto, name, data):
    with open(os.path.join(HERE, proto, name + ".bin"), "wb") as f:
        f.write(data)


# ---- SCGI -------------------------------------------------------------------

def block(pairs):
    return b"".join(n + b"\0" + v + b"\0" for n, v in pairs)


def netstring(data):
    return str(len(data)).encode() + b":" + data + b","


def scgi(pairs, body=b""):
    return netstring(block(pairs)) + body


SAMPLE = [
    (b"CONTENT_LENGTH", b"27"),
    (b"SCGI", b"1"),
    (b"REQUEST_METHOD", b"POST"),
    (b"REQUEST_URI", b"/deepthought"),
]
SAMPLE_BODY = b"What is the answer to life?"
GET = [
    (b"CONTENT_LENGTH", b"0"),
    (b"SCGI", b"1"),
    (b"REQUEST_METHOD", b"GET"),
    (b"REQUEST_URI", b"/"),
]

sample = scgi(SAMPLE, SAMPLE_BODY)
assert sample.startswith(b"70:")  # the SCGI note's own numbers
write("scgi", "spec-sample", sample)
write("scgi", "empty-body", scgi(GET))
split_body = bytes((i * 7) % 251 for i in range(300))
write("scgi", "body-split", scgi(
    [(b"CONTENT_LENGTH", b"300"), (b"SCGI", b"1"), (b"REQUEST_METHOD", b"PUT")], split_body))
write("scgi", "empty-netstring", b"0:,")
write("scgi", "leading-zero", b"0" + sample)
write("scgi", "length-not-digit", b"+" + sample)
write("scgi", "length-empty", b":" + sample[3:])
write("scgi", "length-over-limit", b"1048577:CONTENT_LENGTH\0")
write("scgi", "length-too-many-digits", b"12345678")
write("scgi", "missing-comma", sample[:3 + 70] + b";" + SAMPLE_BODY)
write("scgi", "content-length-not-first", scgi([SAMPLE[1], SAMPLE[0]] + SAMPLE[2:], SAMPLE_BODY))
write("scgi", "content-length-invalid", scgi([(b"CONTENT_LENGTH", b"-1")] + SAMPLE[1:]))
write("scgi", "content-length-empty", scgi([(b"CONTENT_LENGTH", b"")] + SAMPLE[1:]))
write("scgi", "missing-scgi", scgi([SAMPLE[0]] + SAMPLE[2:], SAMPLE_BODY))
write("scgi", "scgi-not-1", scgi([SAMPLE[0], (b"SCGI", b"2")] + SAMPLE[2:], SAMPLE_BODY))
write("scgi", "duplicate-header", scgi(
    GET + [(b"HTTP_X_DUP", b"1"), (b"HTTP_COOKIE", b"a=1"), (b"HTTP_X_DUP", b"2")]))
write("scgi", "duplicate-content-length", scgi(GET + [(b"CONTENT_LENGTH", b"5")], b"hello"))
write("scgi", "duplicate-scgi", scgi(GET + [(b"SCGI", b"1")]))
write("scgi", "value-unterminated", netstring(block(GET)[:-1]))
write("scgi", "name-unterminated", netstring(block(GET) + b"HTTP_X"))
write("scgi", "empty-name", netstring(block(GET) + b"\0x\0"))
write("scgi", "many-headers", scgi(
    GET + [(b"HTTP_X_%d" % i, b"v") for i in range(30)]))
write("scgi", "truncated-body", sample[:-17])
write("scgi", "trailing-bytes", sample + b"EXTRA")


# ---- uwsgi ------------------------------------------------------------------

def var(key, value):
    return struct.pack("<H", len(key)) + key + struct.pack("<H", len(value)) + value


def uwsgi(pairs, body=b"", modifier1=0, modifier2=0, datasize=None):
    data = b"".join(var(k, v) for k, v in pairs)
    size = len(data) if datasize is None else datasize
    return struct.pack("<BHB", modifier1, size, modifier2) + data + body


UGET = [
    (b"REQUEST_METHOD", b"GET"),
    (b"REQUEST_URI", b"/hello?x=1"),
    (b"QUERY_STRING", b"x=1"),
    (b"CONTENT_LENGTH", b""),
    (b"PATH_INFO", b"/hello"),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"),
]
UPOST = [
    (b"REQUEST_METHOD", b"POST"),
    (b"CONTENT_TYPE", b"application/x-www-form-urlencoded"),
    (b"CONTENT_LENGTH", b"11"),
    (b"PATH_INFO", b"/post"),
]

write("uwsgi", "get", uwsgi(UGET))
write("uwsgi", "post", uwsgi(UPOST, b"hello=world"))
write("uwsgi", "no-content-length", uwsgi([p for p in UGET if p[0] != b"CONTENT_LENGTH"]))
write("uwsgi", "empty-vars", uwsgi([]))
write("uwsgi", "body-split", uwsgi(
    [(b"REQUEST_METHOD", b"PUT"), (b"CONTENT_LENGTH", b"300")], split_body))
write("uwsgi", "modifier1-30", uwsgi(
    [(b"SCRIPT_NAME", b"/app"), (b"PATH_INFO", b"/app/x/y"), (b"CONTENT_LENGTH", b"")],
    modifier1=30))
write("uwsgi", "modifier1-30-trailing-slash", uwsgi(
    [(b"PATH_INFO", b"/app/x"), (b"SCRIPT_NAME", b"/app/")], modifier1=30))
write("uwsgi", "modifier1-30-not-a-prefix", uwsgi(
    [(b"SCRIPT_NAME", b"/app"), (b"PATH_INFO", b"/application")], modifier1=30))
write("uwsgi", "modifier1-0-keeps-path-info", uwsgi(
    [(b"SCRIPT_NAME", b"/app"), (b"PATH_INFO", b"/app/x/y")], modifier1=0))
write("uwsgi", "scgi-on-uwsgi", sample)
write("uwsgi", "modifier1-psgi", uwsgi(UGET, modifier1=5))
write("uwsgi", "http-request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
write("uwsgi", "modifier2-nonzero", uwsgi(UGET, modifier2=1))
# datasize ends right after the value length: the value's 3 bytes are missing.
bad = uwsgi([(b"REQUEST_METHOD", b"GET")])
write("uwsgi", "vars-overrun",
      struct.pack("<BHB", 0, len(bad) - 4 - 3, 0) + bad[4:-3])
write("uwsgi", "vars-trailing-byte", uwsgi(UGET, datasize=len(b"".join(var(k, v) for k, v in UGET)) + 1) + b"\0")
write("uwsgi", "empty-key", uwsgi(UGET + [(b"", b"x")]))
write("uwsgi", "datasize-over-limit", struct.pack("<BHB", 0, 65535, 0))
write("uwsgi", "content-length-conflict", uwsgi(
    [(b"CONTENT_LENGTH", b"5"), (b"REQUEST_METHOD", b"POST"), (b"CONTENT_LENGTH", b"6")], b"hello!"))
write("uwsgi", "content-length-repeated-same", uwsgi(
    [(b"CONTENT_LENGTH", b"5"), (b"REQUEST_METHOD", b"POST"), (b"CONTENT_LENGTH", b"5")], b"hello"))
write("uwsgi", "content-length-invalid", uwsgi([(b"CONTENT_LENGTH", b"abc")] + UGET[:3]))
post = uwsgi(UPOST, b"hello=world")
write("uwsgi", "truncated-body", post[:-6])
write("uwsgi", "trailing-bytes", post + b"EXTRA")
