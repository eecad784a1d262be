"""Runs wrk and reads its report (wrk 4.x text output with --latency)."""
import re
import subprocess

from common import HOST

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * _UNITS_MS[m.group(2)] if m else None


def parse(out):
    """{'rps', 'requests', 'p50_ms', 'p99_ms', 'non2xx', 'socket_errors', 'errors'} from wrk's output."""
    r = {"rps": None, "requests": None, "p50_ms": None, "p99_ms": None, "non2xx": 0, "socket_errors": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s+%s(?:\.000)?%%\s+(\S+)" % pct, out, re.M)
        if m:
            r[key] = _ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["socket_errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    r["errors"] = r["non2xx"] + r["socket_errors"]
    return r


def run(wrk, port, path, duration, connections, script=None, timeout_s=10):
    """One wrk run against 127.0.0.1:port; the parsed report plus its raw text."""
    cmd = [wrk, "-t1", "-c%d" % connections, "-d%ds" % duration, "--latency", "--timeout", "%ds" % timeout_s]
    if script:
        cmd += ["-s", str(script)]
    cmd.append("http://%s:%d%s" % (HOST, port, path))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout_s + 30)
        out = p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        out = "wrk did not finish: %s" % e
    r = parse(out)
    r["raw"] = out
    return r
