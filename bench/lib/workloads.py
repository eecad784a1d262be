"""The workloads: one application file each in bench/apps/, the request that
wrk sends, and the check every stack's answer must pass before it is timed.

The checks talk HTTP/1.1 to the front end with the standard library only.
"""
import hashlib
import http.client
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path

from common import APPS, HOST

#: The POST body: 1 MiB of a 16-byte pattern (wrk's Lua script builds the same).
POST_PATTERN = b"wsgi-fpm-bench!\n"
POST_BODY = POST_PATTERN * 65536
#: What apps/flask_json.py answers (GREETING there; kept equal by hand, so
#: that the check needs no Flask in the interpreter running bench/run).
FLASK_JSON = {"message": "Hello, world!", "items": [1, 2, 3], "ok": True}
#: The same as Flask's jsonify() sends it: compact, keys sorted, a newline.
FLASK_BYTES = (json.dumps(FLASK_JSON, separators=(",", ":"), sort_keys=True) + "\n").encode()


@dataclass
class Workload:
    name: str
    label: str
    app: str                 # file in bench/apps/
    path: str                # the URL path requested
    method: str = "GET"
    body: bytes = None
    note: str = ""
    #: How the nginx→nginx ceiling answers it: ("text", content-type, body) or
    #: ("file", name of a data file); None: no ceiling (the answer needs code).
    ceiling: tuple = None
    #: wrk's connections: None for bench/run's --connections; "threads" for
    #: one a backend thread (processes × threads).
    clients: str = None
    expect: dict = field(default_factory=dict)   # filled by prepare()

    def connections(self, default, processes, threads):
        """How many connections wrk keeps open on this workload."""
        return processes * threads if self.clients == "threads" else default

    def wrk_script(self):
        """The Lua script for wrk, or None for a plain GET."""
        if self.method != "POST":
            return None
        return ('wrk.method = "POST"\n'
                'wrk.body = string.rep("%s", %d)\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n'
                % (POST_PATTERN.decode().replace("\n", "\\n"), len(POST_BODY) // len(POST_PATTERN)))

    def check(self, port, timeout=30.0):
        """(None, False) if one request to 127.0.0.1:port is answered
        correctly, else (what was wrong, whether it is worth retrying: a
        refused connection or a 502/503/504 while the backend starts)."""
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
            headers = {"Host": "localhost"}
            if self.body is not None:
                headers["Content-Type"] = "application/octet-stream"
            conn.request(self.method, self.path, body=self.body, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            length = resp.getheader("Content-Length")
            conn.close()
        except (OSError, http.client.HTTPException) as e:
            return "%s %s: %s" % (self.method, self.path, str(e) or type(e).__name__), True
        if resp.status != 200:
            return ("%s %s: status %d %r" % (self.method, self.path, resp.status, body[:100]),
                    resp.status in (502, 503, 504))
        if length is not None and int(length) != len(body):
            return "Content-Length %s but %d bytes" % (length, len(body)), False
        return self.expect["verify"](body), False


def _exact(expected):
    def verify(body):
        if body != expected:
            return "expected %r, got %r" % (expected[:60], body[:60])
        return None
    return verify


def _sha256(expected, size):
    digest = hashlib.sha256(expected).hexdigest() if isinstance(expected, bytes) else expected

    def verify(body):
        if len(body) != size:
            return "expected %d bytes, got %d" % (size, len(body))
        if hashlib.sha256(body).hexdigest() != digest:
            return "body of the right length but wrong content (sha256 differs)"
        return None
    return verify


def _json(expected):
    def verify(body):
        try:
            got = json.loads(body)
        except ValueError:
            return "not JSON: %r" % body[:80]
        return None if got == expected else "expected %r, got %r" % (expected, got)
    return verify


WORKLOADS = [
    Workload("hello", "hello, 13 bytes", "hello.py", "/hello",
             ceiling=("text", "text/plain", b"Hello, world!")),
    Workload("64k", "64 KiB body", "body64k.py", "/64k", ceiling=("file", "64KiB.bin")),
    Workload("10m", "10 MiB via wsgi.file_wrapper", "file10m.py", "/10m", ceiling=("file", "10MiB.bin")),
    Workload("post", "POST 1 MiB, sha256 of the body", "post1m.py", "/upload", method="POST", body=POST_BODY),
    Workload("flask", "small Flask JSON route", "flask_json.py", "/json",
             ceiling=("text", "application/json", FLASK_BYTES)),
    Workload("sleep", "10 ms sleep", "sleep10ms.py", "/sleep",
             note="a server with T threads in all answers at most 100·T requests/s"),
    # With every thread's client waiting on it, a thread that finishes finds
    # nothing queued: the next request arrives while the others still sleep,
    # and a server must see it at once (at 32 clients every thread stays
    # busy and this cannot show).
    Workload("sleep-threads", "10 ms sleep, one client a thread", "sleep10ms.py", "/sleep",
             clients="threads",
             note="as many clients as threads in all; a server with T threads answers at most 100·T requests/s"),
]
BY_NAME = {w.name: w for w in WORKLOADS}


def prepare(data_dir):
    """Writes the data files (world-readable: nginx's and mod_wsgi's workers
    read them as an unprivileged user) and fills in each workload's check.
    The bodies come from the application files themselves."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    body64k = runpy.run_path(str(APPS / "body64k.py"))["BODY"]
    (data_dir / "64KiB.bin").write_bytes(body64k)
    file10m = runpy.run_path(str(APPS / "file10m.py"))   # writes $WSGI_FPM_BENCH_DATA/10MiB.bin
    path10m = Path(file10m["PATH"])
    h = hashlib.sha256()
    with open(path10m, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    for p in data_dir.iterdir():
        p.chmod(0o644)
    hello = runpy.run_path(str(APPS / "hello.py"))["BODY"]
    sleep = runpy.run_path(str(APPS / "sleep10ms.py"))["BODY"]
    BY_NAME["hello"].expect["verify"] = _exact(hello)
    BY_NAME["64k"].expect["verify"] = _sha256(body64k, len(body64k))
    BY_NAME["10m"].expect["verify"] = _sha256(h.hexdigest(), file10m["SIZE"])
    BY_NAME["post"].expect["verify"] = _json({"length": len(POST_BODY),
                                               "sha256": hashlib.sha256(POST_BODY).hexdigest()})
    BY_NAME["flask"].expect["verify"] = _json(FLASK_JSON)
    BY_NAME["sleep"].expect["verify"] = _exact(sleep)
    BY_NAME["sleep-threads"].expect["verify"] = _exact(sleep)
