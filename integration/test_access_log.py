"""--access-log (SPEC §8): one combined-form line per request, with total
and queue time and the request id; JSON with --log-format json."""
import json
import re
import time

import pytest

from harness import APPS

ROUTER = APPS / "router.py"
LINE = re.compile(
    r'^(?P<addr>\S+) - (?P<user>\S+) \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" '
    r'(?P<total>\d+) (?P<queue>\d+) (?P<id>\S+)$')


def read_lines(path, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError("expected %d access-log lines in %s" % (count, path))


def test_each_request_gets_one_combined_line(spawn, run_dir, protocol):
    log = run_dir / ("access-%s.log" % protocol)
    b = spawn("access-" + protocol, ROUTER, "--access-log", str(log), protocols=(protocol,))
    before = len(log.read_text().splitlines()) if log.exists() else 0  # the readiness probe
    r = b.request(protocol, path="/hello", query="x=1", headers=[("User-Agent", "probe/1"), ("Referer", "http://r/")])
    assert r.status == 200
    line = read_lines(log, before + 1)[before]
    m = LINE.match(line)
    assert m, line
    assert m["request"].startswith("GET /hello?x=1 "), line
    assert (m["status"], m["bytes"], m["agent"], m["referer"]) == ("200", "13", "probe/1", "http://r/"), line
    assert int(m["total"]) >= int(m["queue"]) >= 0


def test_json_format_gives_one_object_per_line(spawn, run_dir):
    log = run_dir / "access.json"
    b = spawn("access-json", ROUTER, "--access-log", str(log), "--log-format", "json", protocols=("fastcgi",))
    before = len(log.read_text().splitlines()) if log.exists() else 0
    assert b.request("fastcgi", path="/raise").status == 500
    entry = json.loads(read_lines(log, before + 1)[before])
    assert (entry["method"], entry["uri"], entry["status"]) == ("GET", "/raise", 500), entry
    assert entry["request_id"] and entry["duration_us"] >= entry["queue_us"] >= 0
