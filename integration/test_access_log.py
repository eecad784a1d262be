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
    r'(?P<total>\d+) (?P<queue>\d+) (?P<gil>\d+) (?P<rss>-?\d+|-) (?P<id>\S+)$')


def line_for(path, needle, timeout=5.0):
    """The one line mentioning `needle` (a line is written right after its
    response went out, so it may come a moment after the client has it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = [l for l in path.read_text().splitlines() if needle in l]
        except FileNotFoundError:
            found = []
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no access-log line with %r in %s" % (needle, path))


def test_each_request_gets_one_combined_line(spawn, run_dir, protocol):
    log = run_dir / ("access-%s.log" % protocol)
    b = spawn("access-" + protocol, ROUTER, "--access-log", str(log), protocols=(protocol,))
    r = b.request(protocol, path="/hello", query="x=1", headers=[("User-Agent", "probe/1"), ("Referer", "http://r/")])
    assert r.status == 200
    line = line_for(log, "/hello?x=1")
    m = LINE.match(line)
    assert m, line
    assert m["request"].startswith("GET /hello?x=1 "), line
    assert (m["status"], m["bytes"], m["agent"], m["referer"]) == ("200", "13", "probe/1", "http://r/"), line
    assert int(m["total"]) >= int(m["queue"]) >= 0


def test_json_format_gives_one_object_per_line(spawn, run_dir):
    log = run_dir / "access.json"
    b = spawn("access-json", ROUTER, "--access-log", str(log), "--log-format", "json", protocols=("fastcgi",))
    assert b.request("fastcgi", path="/raise").status == 500
    entry = json.loads(line_for(log, '"/raise"'))
    assert (entry["method"], entry["uri"], entry["status"]) == ("GET", "/raise", 500), entry
    assert entry["request_id"] and entry["duration_us"] >= entry["queue_us"] >= 0
