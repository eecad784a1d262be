"""Responses that a server must police (SPEC §3, start_response and
Content-Length), chosen by ``?case=``:

  ok          a normal 200 with Content-Length
  crlf        a header value with CR LF in it            → server answers 500
  hopbyhop    a hop-by-hop header (Connection)           → 500
  negcl       Content-Length: -1                         → 500
  badcl       Content-Length: ten                        → 500
  badstatus   status "OK" without a code                 → 500
  long        declares 10 bytes, yields 20               → only 10 reach the client
  short       declares 20 bytes, yields 10               → logged, connection not reused
  errors      writes ?token= to wsgi.errors              → appears in the error log
  slowtail    a generator: its declared 5 bytes, then it sleeps ?sleep=
              seconds before it stops                    → the response is complete
                                                           before the sleep ends
  raisetail   a generator: its declared 5 bytes, then it raises
                                                         → the response stands, the
                                                           error is logged
  kept        one module-level header list, its X-Kept tuple replaced by
              ?header= when given: a server that remembers what it
              validated must see every change (and refuse a bad one)
"""
import time

from _common import query

CASES = {
    "ok": ("200 OK", [("Content-Length", "5")], [b"hello"]),
    "crlf": ("200 OK", [("X-Bad", "a\r\nInjected: yes")], [b"x"]),
    "hopbyhop": ("200 OK", [("Connection", "close")], [b"x"]),
    "negcl": ("200 OK", [("Content-Length", "-1")], [b"x"]),
    "badcl": ("200 OK", [("Content-Length", "ten")], [b"x"]),
    "badstatus": ("OK", [], [b"x"]),
    "long": ("200 OK", [("Content-Length", "10")], [b"0123456789", b"ABCDEFGHIJ"]),
    "short": ("200 OK", [("Content-Length", "20")], [b"0123456789"]),
}

KEPT_STATUS = "200 OK"
KEPT = [("Content-Type", "text/plain"), ("X-Kept", "first")]


def application(environ, start_response):
    q = query(environ)
    case = q.get("case", "ok")
    if case == "errors":
        environ["wsgi.errors"].write("wsgi.errors says %s\n" % q.get("token"))
        environ["wsgi.errors"].flush()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if case == "kept":
        if "header" in q:
            KEPT[1] = ("X-Kept", q["header"])
        start_response(KEPT_STATUS, KEPT)
        return [b"kept"]
    if case in ("slowtail", "raisetail"):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return _tail(case, float(q.get("sleep", "0")))
    status, headers, body = CASES[case]
    # A validating start_response raises here, or the server refuses the
    # headers when it sends them; either way the client must get a 500.
    start_response(status, [("Content-Type", "text/plain")] + headers)
    return body


def _tail(case, sleep):
    yield b"hello"
    if case == "raisetail":
        raise RuntimeError("raised after the whole body")
    time.sleep(sleep)
