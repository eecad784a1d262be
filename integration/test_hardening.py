"""The fixes of the security and robustness review, each seen as a user
sees it: straight to wsgi-fpm's sockets with the independent client in
wire.py, or through real nginx and Apache httpd. Each test names its review
item ("item 8b"); the expectations come from SPEC.md §2, §3, §6 and the
README's "Limits and timeouts".

Not here, because other files already check them: the master's half of
item 5 (another pool's systemd sockets, test_master_safety.py), huge
durations (item 10's second half, test_master_safety.py) and a Digest uri
that does not match the request (item 17, test_auth.py).
"""
import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import struct
import threading
import time
import uuid
from pathlib import Path

import pytest

import client
import wire
from harness import APPS, HOST, SitesFrontEnd, tail
from wire import (FCGI_ABORT_REQUEST, FCGI_AUTHORIZER, FCGI_END_REQUEST,
                  FCGI_GET_VALUES, FCGI_GET_VALUES_RESULT, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT,
                  fcgi_begin, fcgi_nv, fcgi_params_block, fcgi_record)

APP = APPS / "hardening_app.py"
AUTH_SCRIPT = APPS / "auth_script.py"
REALM = "hardening"
HELLO = b"Hello, world!"

K = 1024
MAX_PARAMS = 256 * K
MAX_CONNECTION_PARAMS = 1024 * K
MAX_REQUESTS_PER_CONNECTION = 8


# ------------------------------------------------------------------ helpers

def tag():
    """A header marking one request, to tell whether it reached the application."""
    return ("X-Tag", uuid.uuid4().hex)


def app_runs(run_dir):
    try:
        return (Path(run_dir) / "tmp" / "hardening-runs.log").read_text().split()
    except OSError:
        return []


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(0.05)


def log_line(backend, *needles, timeout=5.0):
    """The first line of the instance's log holding every needle (a log
    line is written a moment after the client saw the refusal)."""
    def find():
        for line in backend.log_text().splitlines():
            if all(n in line for n in needles):
                return line
        return None
    try:
        return wait_for(find, timeout, "a log line with %r" % (needles,))
    except AssertionError:
        raise AssertionError("no line of %s holds all of %r; last lines:\n%s"
                             % (backend.log, needles, tail(backend.log, 15))) from None


def peer(sock):
    return "127.0.0.1:%d" % sock.getsockname()[1]


def fcgi_params(path, query="", method="GET", headers=(), body_len=None, extra=()):
    return wire.cgi_params(method, path, query, headers, body_len, extra=extra, protocol="fastcgi")


def read_records(sock, timeout):
    """Every record until the peer closes: (records, closed)."""
    reader = wire.FcgiReader(sock)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out, False
            sock.settimeout(left)
            _, rtype, rid, content = reader.record()
            out.append((rtype, rid, content))
    except (ConnectionError, OSError) as e:
        return out, not isinstance(e, socket.timeout)


def stdout_of(records, rid):
    return b"".join(c for t, i, c in records if t == FCGI_STDOUT and i == rid)


def end_of(records, rid):
    ends = [struct.unpack(">IB3x", c) for t, i, c in records if t == FCGI_END_REQUEST and i == rid]
    return ends[0] if ends else None


def hello_on(sock, req_id=1):
    """/hello on a kept connection; asserts the answer is exactly its own."""
    r = wire.fcgi_request(None, fcgi_params("/hello"), keep_conn=True, sock=sock, req_id=req_id)
    assert r.end == (0, wire.FCGI_REQUEST_COMPLETE), r
    assert (r.status, r.body) == (200, HELLO), "another request's output in /hello's answer: %r" % r.raw
    assert b"LATE" not in r.raw + r.stderr, r.raw
    return r


def assert_nothing_stray(sock):
    """No record is waiting on a kept connection: GET_VALUES is answered next."""
    sock.sendall(fcgi_record(FCGI_GET_VALUES, 0, fcgi_nv(b"FCGI_MPXS_CONNS", b"")))
    _, rtype, rid, content = wire.FcgiReader(sock).record()
    assert (rtype, rid) == (FCGI_GET_VALUES_RESULT, 0), \
        "a stray record (type %d, id %d, %r) arrived on the kept connection" % (rtype, rid, content[:100])


def socket_inodes(pid):
    """Inodes of the sockets a process holds, from /proc/PID/fd."""
    out = set()
    fd_dir = Path("/proc/%d/fd" % pid)
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def tcp_sockets(port):
    """{inode: state} of the IPv4 TCP sockets whose local port is `port`
    (state 0A is LISTEN, 01 ESTABLISHED), from /proc/net/tcp."""
    out = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], int(fields[9])
        if int(local.split(":")[1], 16) == port and inode:
            out[inode] = state
    return out


def stream_until_closed(sock, pieces, pace=0.0, limit=30.0):
    """Sends the byte strings of `pieces` until the peer closes (a broken
    pipe or a reset), reading whatever it answers meanwhile. Returns
    (payload bytes sent, seconds, the error, bytes received); the error is
    None when everything went out."""
    got = bytearray()
    stop = threading.Event()

    def read():
        try:
            while not stop.is_set():
                data = sock.recv(65536)
                if not data:
                    return
                got.extend(data)
        except OSError:
            return

    reader = threading.Thread(target=read, daemon=True)
    sock.settimeout(limit)
    reader.start()
    sent, error = 0, None
    t0 = time.monotonic()
    try:
        for payload, wire_bytes in pieces:
            sock.sendall(wire_bytes)
            sent += payload
            if pace:
                time.sleep(pace)
            if time.monotonic() - t0 > limit:
                break
    except (BrokenPipeError, ConnectionResetError) as e:
        error = e
    elapsed = time.monotonic() - t0
    stop.set()
    reader.join(5)
    return sent, elapsed, error, bytes(got)


def body_pieces(protocol, total, size=64 * K):
    """(payload, bytes on the wire) for a body of `total` bytes."""
    block = b"b" * size
    if protocol == "fastcgi":
        block = b"".join(fcgi_record(FCGI_STDIN, 1, block[i:i + 65535]) for i in range(0, size, 65535))
    for _ in range(total // size):
        yield size, block


# ------------------------------------------------------------------ instances

@pytest.fixture(scope="module")
def plain(spawn_module):
    """Parameter blocks up to 4M, for item 10's long joined header."""
    return spawn_module("hardening-plain", APP, "--processes", "1", "--threads", "4", "--max-params-size", "4M")


@pytest.fixture(scope="module")
def limits(spawn_module):
    return spawn_module("hardening-limits", APP, "--processes", "1", "--threads", "4",
                        "--max-params-size", "256K", "--max-connection-params-size", "1M",
                        "--max-requests-per-connection", str(MAX_REQUESTS_PER_CONNECTION),
                        "--keepalive-timeout", "1.5", "--header-timeout", "2", "--socket-timeout", "10")


@pytest.fixture(scope="module")
def small(spawn_module):
    """A parameter limit small enough for a uwsgi head (at most 64 KiB) to pass it."""
    return spawn_module("hardening-small", APP, "--processes", "1", "--threads", "4",
                        "--max-params-size", "4K")


@pytest.fixture(scope="module")
def authed(spawn_module, run_dir):
    log = Path(run_dir) / "hardening-access.log"
    b = spawn_module("hardening-auth", APP, "--processes", "1", "--threads", "4",
                     "--auth-script", AUTH_SCRIPT, "--auth-realm", REALM,
                     "--access-log", log, protocols=("fastcgi",))
    b.access_log = log
    return b


# ------------------------------------------------------------------ item 5b: close-on-exec

def test_a_child_process_the_application_starts_holds_none_of_the_pools_sockets(plain, protocol):
    """Item 5b: the worker's listening sockets (and the connection it
    serves) are close-on-exec, so a program the application runs (here
    `sleep`, started with close_fds=False, as os.system would) cannot
    accept the pool's connections or keep a client's connection open."""
    r = plain.request(protocol, path="/child", query="s=20", timeout=10)
    assert r.status == 200, r
    child = int(r.body)
    try:
        port = plain.ports[protocol]
        held = socket_inodes(child)
        ours = {}
        for p in plain.ports.values():
            ours.update(tcp_sockets(p))
        listeners = {i for i, state in ours.items() if state == "0A"}
        assert len(listeners) >= len(plain.ports), "listeners not found in /proc/net/tcp: %r" % ours
        assert not held & listeners, "the application's child %d holds the pool's listening socket(s) %r" % (
            child, sorted(held & listeners))
        leaked = held & set(ours)
        assert not leaked, "the application's child %d holds sockets on the pool's port %d: %r" % (
            child, port, {i: ours[i] for i in leaked})
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------ item 6: late output

def late_log(run_dir, t):
    try:
        return (Path(run_dir) / "tmp" / ("latewrite-%s.log" % t)).read_text().splitlines()
    except OSError:
        return []


def hellos_for(sock, seconds):
    """/hello again and again on the kept connection (request id 1 each
    time, as nginx does) for `seconds`; each answer must be exactly its own."""
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        hello_on(sock)
        n += 1
    return n


def test_output_written_after_a_response_never_lands_in_the_next_one_on_the_connection(plain, run_dir):
    """Item 6: the iterable's close() calls the write callable, and a thread
    keeps calling the leaked write for a second after the response; the
    requests that follow on the same kept connection, with the same
    request id, get exactly their own answers and nothing is left over."""
    t = uuid.uuid4().hex
    sock = wire.connect(plain.addr("fastcgi"), timeout=10)
    try:
        r = wire.fcgi_request(None, fcgi_params("/latewrite", "tag=%s&leak=1.5" % t), keep_conn=True, sock=sock)
        assert r.status == 200 and r.body.startswith(b"first"), r
        assert r.end == (0, wire.FCGI_REQUEST_COMPLETE), r
        n = hellos_for(sock, 1.5)
        assert_nothing_stray(sock)
    finally:
        sock.close()
    # The late writes were tried meanwhile, and refused.
    tries = wait_for(lambda: "leak: done" in late_log(run_dir, t) and late_log(run_dir, t),
                     what="the leaking thread's record")
    assert [l for l in tries if l.startswith("close:")], tries
    assert len([l for l in tries if l.startswith("leak:")]) > 10, tries
    assert n > 5


def test_output_of_an_aborted_request_goes_nowhere(plain, run_dir):
    """Item 6, after FCGI_ABORT_REQUEST: the aborted response's close() and
    its leaked write produce nothing on the connection, neither before nor
    after the id is reused."""
    t = uuid.uuid4().hex
    sock = wire.connect(plain.addr("fastcgi"), timeout=10)
    try:
        sock.sendall(fcgi_begin(1, keep_conn=True)
                     + fcgi_params_block(fcgi_params("/latestream", "tag=%s&leak=1.5&seconds=20" % t))
                     + fcgi_record(FCGI_STDIN, 1))
        reader = wire.FcgiReader(sock)
        assert reader.record()[1] == FCGI_STDOUT  # it is streaming
        sock.sendall(fcgi_record(FCGI_ABORT_REQUEST, 1))
        deadline = time.monotonic() + 5
        while True:
            assert time.monotonic() < deadline, "no END_REQUEST within 5 s of ABORT_REQUEST"
            _, rtype, rid, content = reader.record()
            assert rid == 1, (rtype, rid)
            assert b"LATE" not in content, content
            if rtype == FCGI_END_REQUEST:
                break
        assert reader.buf == b"", "bytes after END_REQUEST: %r" % reader.buf[:100]
        n = hellos_for(sock, 1.5)
        assert_nothing_stray(sock)
    finally:
        sock.close()
    tries = wait_for(lambda: "leak: done" in late_log(run_dir, t) and late_log(run_dir, t),
                     what="the leaking thread's record")
    assert [l for l in tries if l.startswith("close:")], tries
    assert n > 5


# ------------------------------------------------------------------ item 7: encoded dot segments

#: Paths whose percent-encoding hides a dot segment: the front end routed
#: on the encoded form, the application would act on another path.
HIDDEN_DOTS = ["/app/%2e%2e/admin", "/admin/..%2fpublic", "/a/%2E/b", "/a/%2e%2E/%2e%2e/etc/passwd"]


@pytest.mark.parametrize("path", HIDDEN_DOTS)
def test_a_dot_segment_hidden_by_percent_encoding_is_400_and_never_reaches_the_application(
        plain, protocol, path, run_dir):
    """Item 7: REQUEST_URI decides the path; a %2e or %2f that makes a dot
    segment once decoded is refused, also when the front end's PATH_INFO
    is innocent."""
    t = tag()
    r = plain.request(protocol, path=path, headers=[t], timeout=10)
    assert r.status == 400, r
    assert b"REQUEST_METHOD" not in r.body, r
    assert t[1] not in app_runs(run_dir), "%s reached the application" % path


def test_plain_dot_segments_are_resolved_before_the_application_sees_the_path(plain, protocol):
    """Item 7: an unencoded /a/./b/../c is an ordinary path, /a/c."""
    r = plain.request(protocol, path="/a/./b/../c", timeout=10)
    assert r.status == 200, r
    env = json.loads(r.body)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/a/c"), env


@pytest.fixture(scope="module")
def nginx_plain(request, run_dir, plain):
    """nginx over FastCGI (conf/nginx/fastcgi.conf) in front of `plain`."""
    fe = SitesFrontEnd(run_dir, "nginx", {"plain": ("fastcgi.conf", {
        "BACKEND_PORT": plain.ports["fastcgi"], "MOUNT": ""})}, label="hardening")
    request.addfinalizer(fe.stop)
    return fe.ports["plain"]


@pytest.mark.parametrize("path", HIDDEN_DOTS[:3])
def test_behind_nginx_a_dot_segment_hidden_by_percent_encoding_is_400(nginx_plain, path, run_dir):
    """Item 7 through nginx, which passes REQUEST_URI as the client sent it."""
    t = tag()
    r = client.request(nginx_plain, "GET", path, headers=[t], timeout=10)
    assert r.status == 400, r
    assert t[1] not in app_runs(run_dir), "%s reached the application behind nginx" % path
    r = client.request(nginx_plain, "GET", "/a/./b/../c", timeout=10)
    assert r.status == 200, r
    assert r.json()["PATH_INFO"] == "/a/c", r


# ------------------------------------------------------------------ item 8: bounds

def test_unfinished_params_of_many_request_ids_are_bounded_per_connection(limits):
    """Item 8a: request ids that each hold a PARAMS stream just under
    --max-params-size (256K) cannot together hold more than
    --max-connection-params-size (1M): the id that passes the sum gets a
    431 and END_REQUEST, the connection closes, and the log names the limit."""
    per_id = 250 * K
    sock = wire.connect(limits.addr("fastcgi"), timeout=10)
    where = peer(sock)
    try:
        sent_ids = []
        try:
            for rid in range(1, 7):
                block = b"".join(fcgi_nv(k, v) for k, v in fcgi_params("/hello"))
                block += fcgi_nv("HTTP_X_FILL", "f" * per_id)
                block = block[:per_id]  # the pair is never finished: the stream stays open
                data = fcgi_begin(rid, keep_conn=True)
                for i in range(0, len(block), 65535):
                    data += fcgi_record(FCGI_PARAMS, rid, block[i:i + 65535])
                sock.sendall(data)
                sent_ids.append(rid)
        except (BrokenPipeError, ConnectionResetError):
            pass
        records, closed = read_records(sock, 5)
    finally:
        sock.close()
    assert closed, "the connection stayed open with %d unfinished 250K parameter blocks" % len(sent_ids)
    # 4 × 250K fit in 1M; the fifth id passes it.
    assert end_of(records, 5) == (0, wire.FCGI_REQUEST_COMPLETE), records
    status, _, _, _ = wire.parse_head(stdout_of(records, 5), "cgi")
    assert status == 431, stdout_of(records, 5)
    for rid in (1, 2, 3, 4):
        assert not stdout_of(records, rid).startswith(b"Status: 200"), "request %d was answered" % rid
    log_line(limits, where, str(MAX_CONNECTION_PARAMS))
    r = limits.request("fastcgi", path="/hello", timeout=10)
    assert (r.status, r.body) == (200, HELLO), r


def test_request_ids_beyond_max_requests_per_connection_get_cant_mpx_conn_and_the_connection_lives(limits):
    """Item 8b: with --max-requests-per-connection 8, a ninth live id gets
    FCGI_END_REQUEST with protocol status FCGI_CANT_MPX_CONN (1); the eight
    are answered, and then the ninth id is served on the same connection."""
    n = MAX_REQUESTS_PER_CONNECTION
    sock = wire.connect(limits.addr("fastcgi"), timeout=10)
    try:
        sock.sendall(b"".join(fcgi_begin(rid, keep_conn=True) for rid in range(1, n + 2)))
        reader = wire.FcgiReader(sock)
        while True:
            _, rtype, rid, content = reader.record()
            assert rid == n + 1 and rtype in (FCGI_STDOUT, FCGI_END_REQUEST), (rtype, rid, content)
            if rtype == FCGI_END_REQUEST:
                break
            assert content == b"", "a refused id got output: %r" % content
        assert struct.unpack(">IB3x", content)[1] == wire.FCGI_CANT_MPX_CONN, content
        for rid in range(1, n + 1):
            sock.sendall(fcgi_params_block(fcgi_params("/hello"), rid) + fcgi_record(FCGI_STDIN, rid))
        answered = {}
        while len(answered) < n:
            _, rtype, rid, content = reader.record()
            answered.setdefault(rid, b"")
            if rtype == FCGI_STDOUT:
                answered[rid] += content
            elif rtype == FCGI_END_REQUEST:
                assert struct.unpack(">IB3x", content) == (0, wire.FCGI_REQUEST_COMPLETE), (rid, content)
                assert wire.parse_head(answered.pop(rid), "cgi")[3] == HELLO
                answered[-rid] = True
        hello_on(sock, req_id=n + 1)
    finally:
        sock.close()


def test_an_idle_kept_connection_is_closed_after_keepalive_timeout(limits):
    """Item 8c: --keepalive-timeout 1.5: a kept connection used again within
    the timeout serves on; left idle, it is closed about 1.5 s later."""
    sock = wire.connect(limits.addr("fastcgi"), timeout=10)
    try:
        hello_on(sock)
        time.sleep(0.8)
        hello_on(sock)
        t0 = time.monotonic()
        closed, got = wire.wait_closed(sock, 8)
        elapsed = time.monotonic() - t0
    finally:
        sock.close()
    assert closed, "an idle kept connection outlived --keepalive-timeout 1.5 by 8 s"
    assert got == b"", got
    assert 1.2 <= elapsed <= 4.0, "closed after %.2f s with --keepalive-timeout 1.5" % elapsed


def test_a_request_head_trickled_a_byte_at_a_time_is_cut_at_header_timeout(limits, protocol):
    """Item 8d: each byte comes well within --socket-timeout (10 s), but the
    head is not complete within --header-timeout (2 s): the connection is
    closed then, with a log line naming the peer."""
    head = wire.head_bytes(protocol, wire.cgi_params("GET", "/hello", protocol=protocol,
                                                     headers=[("X-Pad", "p" * 200)]))
    sock = wire.connect(limits.addr(protocol), timeout=10)
    where = peer(sock)
    closed_after = None
    try:
        sock.settimeout(0.1)
        t0 = time.monotonic()
        for i in range(len(head)):  # 0.1 s a byte: ~30 s for the whole head
            try:
                sock.sendall(head[i:i + 1])
                data = sock.recv(65536)
            except socket.timeout:
                data = None
            except (BrokenPipeError, ConnectionResetError):
                data = b""
            if data is not None:
                assert data == b"" or b"Hello" not in data, data
                closed_after = time.monotonic() - t0
                break
            if time.monotonic() - t0 > 8:
                break
    finally:
        sock.close()
    assert closed_after is not None, "a head trickled for 8 s was not cut (--header-timeout 2)"
    assert 1.5 <= closed_after <= 4.5, "cut after %.2f s with --header-timeout 2" % closed_after
    log_line(limits, where, "--header-timeout")


@pytest.fixture
def capped(spawn):
    return spawn("hardening-maxconns", APP, "--processes", "1", "--threads", "4",
                 "--max-connections", "3", protocols=("fastcgi",))


def test_max_connections_holds_the_next_connection_in_the_listen_queue(capped):
    """Item 8e: --max-connections 3: with three kept connections open and
    idle, a fourth is not served until one of them closes; FCGI_GET_VALUES
    reports FCGI_MAX_CONNS 3."""
    kept = [wire.connect(capped.addr("fastcgi"), timeout=10) for _ in range(3)]
    extra = None
    try:
        for s in kept:
            hello_on(s)
        kept[0].sendall(fcgi_record(FCGI_GET_VALUES, 0, fcgi_nv(b"FCGI_MAX_CONNS", b"")))
        _, rtype, _, content = wire.FcgiReader(kept[0]).record()
        assert rtype == FCGI_GET_VALUES_RESULT
        assert dict(wire.fcgi_nv_decode(content)) == {b"FCGI_MAX_CONNS": b"3"}
        extra = wire.connect(capped.addr("fastcgi"), timeout=10)  # the kernel's queue takes it
        extra.sendall(fcgi_begin(1) + fcgi_params_block(fcgi_params("/hello")) + fcgi_record(FCGI_STDIN, 1))
        extra.settimeout(1.0)
        with pytest.raises(socket.timeout):
            got = extra.recv(65536)
            pytest.fail("the fourth connection was served over --max-connections 3: %r" % got)
        kept[1].close()
        t0 = time.monotonic()
        extra.settimeout(5)
        out, _, end = wire.FcgiReader(extra).response(1)
        assert wire.parse_head(out, "cgi")[3] == HELLO
        assert time.monotonic() - t0 < 3.0
        # The two still open serve on.
        hello_on(kept[0])
        hello_on(kept[2])
    finally:
        for s in kept + [extra]:
            if s is not None:
                s.close()


# ------------------------------------------------------------------ item 9: no endless reading

FLOOD = 100 * 1024 * K
#: What the kernel's buffers on both ends can take in while nobody reads
#: (loopback autotuning grows them to a few MiB), plus the ~1 MiB a worker
#: may drain before closing.
ACCEPTED_AT_MOST = 24 * 1024 * K


def oversized_head(protocol):
    """A request head over --max-params-size 4K, declaring a 100 MB body."""
    params = wire.cgi_params("POST", "/upload", headers=[("X-Big", "a" * 8000)], body_len=FLOOD,
                             protocol=protocol)
    return wire.head_bytes(protocol, params)


def test_after_refusing_oversized_params_the_worker_stops_reading(small, protocol):
    """Item 9: once the head is refused (431), a client that streams 100 MB
    of body at the worker has its connection closed within seconds, long
    before the 100 MB are taken in."""
    sock = wire.connect(small.addr(protocol), timeout=10)
    try:
        sock.sendall(oversized_head(protocol))
        sent, elapsed, error, got = stream_until_closed(sock, body_pieces(protocol, FLOOD), limit=10)
    finally:
        sock.close()
    assert error is not None, "the worker took in all %d MB after refusing the head (%.1f s)" % (
        FLOOD >> 20, elapsed)
    assert sent < ACCEPTED_AT_MOST, "the worker took in %d MB after refusing the head" % (sent >> 20)
    assert elapsed < 3.0, "the connection was closed only %.1f s into the flood" % elapsed
    if got:  # the 431 may be lost to the reset that closes a connection with unread bytes
        assert b"431" in got.split(b"\n", 1)[0] or b"Status: 431" in got, got[:200]


@pytest.mark.parametrize("size,pace", [(64 * K, 0.0), (32 * K, 0.1)], ids=["fast", "slow"])
def test_closing_after_an_answer_drains_at_most_about_a_mebibyte_or_two_seconds(small, protocol, size, pace):
    """Item 9: /hello answers without reading its 100 MB body; the worker
    then discards what comes in for at most about 1 MiB (a fast client) or
    2 s (a client sending 320 KiB a second) before it closes."""
    params = wire.cgi_params("POST", "/hello", body_len=FLOOD, protocol=protocol)
    sock = wire.connect(small.addr(protocol), timeout=10)
    try:
        sock.sendall(wire.head_bytes(protocol, params))
        sent, elapsed, error, got = stream_until_closed(sock, body_pieces(protocol, FLOOD, size), pace=pace,
                                                        limit=10)
    finally:
        sock.close()
    assert HELLO in got, "no answer before the close: %r" % got[:300]
    assert error is not None, "the worker took in %d MB of a body nobody reads (%.1f s)" % (sent >> 20, elapsed)
    assert sent < ACCEPTED_AT_MOST, "the worker took in %d MB of a body nobody reads" % (sent >> 20)
    if pace:
        # 2 s at 320 KiB/s is well under 1 MiB: the time limit closed it.
        assert 1.0 <= elapsed <= 3.5, "closed %.1f s into a slow body" % elapsed
    else:
        assert elapsed < 3.0, "the connection was closed only %.1f s into the body" % elapsed


# ------------------------------------------------------------------ item 10: repeated headers

def joined_header_request(backend, repeats, width):
    """`repeats` params HTTP_X_REP, each `width` bytes: 00000vvv…, 00001vvv…"""
    values = [("%05d" % i).ljust(width, "v") for i in range(repeats)]
    params = fcgi_params("/env") + [("HTTP_X_REP", v) for v in values]
    t0 = time.monotonic()
    r = wire.fcgi_request(backend.addr("fastcgi"), params, timeout=30)
    elapsed = time.monotonic() - t0
    assert r.status == 200, r
    assert json.loads(r.body)["HTTP_X_REP"] == ", ".join(values)
    return elapsed


def test_a_header_repeated_nine_thousand_times_is_joined_in_well_under_a_second(plain):
    """Item 10: nginx sends each repetition of a header as a param of its
    own; 9,000 repetitions of 400 bytes (3.6 MB, within --max-params-size
    4M) are joined with ", " in order within a second: appended in place,
    not copied anew for each repetition (which took seconds)."""
    elapsed = joined_header_request(plain, 9000, 400)
    assert elapsed < 1.0, "9,000 repeated headers took %.2f s" % elapsed


def test_a_header_repeated_twenty_thousand_times_is_joined_in_well_under_a_second(plain):
    """Item 10 as the review put it: 20,000 short repetitions (about 300 KB,
    well within --max-params-size) are joined within a second."""
    elapsed = joined_header_request(plain, 20000, 5)
    assert elapsed < 1.0, "20,000 repeated headers took %.2f s" % elapsed


# ------------------------------------------------------------------ item 11: log forging

FORGED = "2026-01-01 forged line"


def lines_with(path_or_text, needle):
    text = path_or_text.read_text(errors="replace") if isinstance(path_or_text, Path) else path_or_text
    return [l for l in text.splitlines() if needle in l]


def assert_one_line_each(text, what):
    """No line of the log starts with the forged text: each request's
    entry stayed on its own line."""
    starts = [l for l in text.splitlines() if l.lstrip().startswith("2026-01-01 forged")]
    assert not starts, "%s: a forged line begins a line of its own: %r" % (what, starts)


def test_a_newline_in_remote_user_or_credentials_cannot_forge_log_lines(authed):
    """Item 11: REMOTE_USER as a FastCGI param (Apache passes it), and Basic
    and Digest credentials whose user name holds a newline: the access log
    and the error log keep each request on exactly one line, the newline
    written as \\x0a (or escaped otherwise, never raw)."""
    addr = authed.addr("fastcgi")
    marker = uuid.uuid4().hex
    user = "alice\n" + FORGED
    # 1. A responder request with REMOTE_USER set by the front end.
    r = wire.fcgi_request(addr, fcgi_params("/hello", "m=" + marker, extra=[("REMOTE_USER", user)]))
    assert (r.status, r.body) == (200, HELLO), r
    # 2. A generic authorizer (lighttpd's shape) with Basic credentials.
    token = base64.b64encode(("%s:pw\n%s" % (user, FORGED)).encode()).decode()
    basic_params = fcgi_params("/private", "m=" + marker, headers=[("Authorization", "Basic " + token)])
    # 3. The same with Digest, the newline raw in the header value.
    digest = ('Digest username="%s", realm="%s\n%s", nonce="n", uri="/private?m=%s", response="0", '
              'qop=auth, nc=00000001, cnonce="c"' % (user, REALM, FORGED, marker))
    digest_params = fcgi_params("/private", "m=" + marker, headers=[("Authorization", digest)])
    for params in (basic_params, digest_params):
        s = wire.connect(addr, 10)
        try:
            s.sendall(fcgi_begin(1, role=FCGI_AUTHORIZER) + fcgi_params_block(params))
            out, _, end = wire.FcgiReader(s).response(1)
        finally:
            s.close()
        assert wire.parse_head(out, "cgi")[0] == 401, out
    # The access log: one line per request, the user escaped.
    access = wait_for(lambda: len(lines_with(authed.access_log, marker)) >= 1 and authed.access_log.read_text(),
                      what="the access-log lines")
    assert_one_line_each(access, "access log")
    mine = lines_with(authed.access_log, "/hello?m=" + marker)
    assert len(mine) == 1, mine
    assert "alice\\x0a" + FORGED in mine[0], mine[0]
    assert mine[0].startswith("127.0.0.1 - alice\\x0a" + FORGED + " ["), mine[0]
    # The error log: the refusals' reasons name the user, on one line.
    log_line(authed, "forged")
    text = authed.log_text()
    assert_one_line_each(text, "error log")
    assert "\n" + FORGED not in text
    for line in lines_with(text, "forged"):
        assert line.startswith("wsgi-fpm["), "a log line not written by the logger: %r" % line


# ------------------------------------------------------------------ item 13: authnz as AuthBasicProvider

PASSWORDS = {"alice": "pw-alice-8c1d", "carol": "pw-carol-93be"}
WRONG = "pw-wrong-5b7e"


def apache_authnz_basic_params(user, password):
    """What mod_authnz_fcgi sends for a provider of type authnz named in
    AuthBasicProvider: the AUTHORIZER role, no FCGI_APACHE_ROLE (Apache sets
    none for a combined provider), REMOTE_USER and REMOTE_PASSWD from the
    client's Basic credentials, no HTTP_AUTHORIZATION (the shape of
    shared/frontends/apache-authnz-fcgi-authn.txt otherwise)."""
    return [
        ("HTTP_HOST", "127.0.0.1:30081"), ("HTTP_USER_AGENT", "curl/7.88.1"), ("HTTP_ACCEPT", "*/*"),
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("SERVER_SIGNATURE", ""), ("SERVER_SOFTWARE", "Apache/2.4.71 (Debian)"),
        ("SERVER_NAME", "127.0.0.1"), ("SERVER_ADDR", "127.0.0.1"), ("SERVER_PORT", "30081"),
        ("REMOTE_ADDR", "127.0.0.1"), ("DOCUMENT_ROOT", "/srv/www"), ("REQUEST_SCHEME", "http"),
        ("CONTEXT_PREFIX", ""), ("CONTEXT_DOCUMENT_ROOT", "/srv/www"),
        ("SERVER_ADMIN", "[no address given]"),
        ("SCRIPT_FILENAME", "proxy:fcgi://127.0.0.1:30011/basic/page"), ("REMOTE_PORT", "50164"),
        ("REMOTE_USER", user), ("AUTH_TYPE", "Basic"),
        ("GATEWAY_INTERFACE", "CGI/1.1"), ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_METHOD", "GET"), ("QUERY_STRING", "q=1"), ("REQUEST_URI", "/basic/page?q=1"),
        ("FCGI_ROLE", "AUTHORIZER"), ("REMOTE_PASSWD", password), ("HTTP_CONNECTION", "close"),
    ]


def fcgi_authorizer(addr, params):
    """An AUTHORIZER request as Apache sends it: params, no STDIN at all."""
    s = wire.connect(addr, 10)
    try:
        s.sendall(fcgi_begin(1, role=FCGI_AUTHORIZER) + fcgi_params_block(params))
        out, err, end = wire.FcgiReader(s).response(1)
    finally:
        s.close()
    status, reason, headers, body = wire.parse_head(out, "cgi")
    return wire.Response(status, reason, headers, body, out, end, err)


def test_apache_authnz_basic_provider_shape_authenticates_with_remote_user_and_remote_passwd(authed):
    """Item 13: the right password is 200 with Variable-REMOTE_USER (the
    canonical name where check_password gives one); a wrong one or an
    unknown user is 401."""
    addr = authed.addr("fastcgi")
    r = fcgi_authorizer(addr, apache_authnz_basic_params("alice", PASSWORDS["alice"]))
    assert r.end == (0, wire.FCGI_REQUEST_COMPLETE), r
    assert r.status == 200, r
    assert sorted(k.lower() for k, _ in r.headers) == ["status", "variable-remote_user"], r.headers
    assert r.header("Variable-REMOTE_USER") == "alice"
    r = fcgi_authorizer(addr, apache_authnz_basic_params("carol", PASSWORDS["carol"]))
    assert (r.status, r.header("Variable-REMOTE_USER")) == (200, "Carol"), r
    for user, password in (("alice", WRONG), ("zed", WRONG), ("alice", "")):
        r = fcgi_authorizer(addr, apache_authnz_basic_params(user, password))
        assert r.status == 401, (user, password, r)
        assert r.header("Variable-REMOTE_USER") is None, r.headers


APACHE_AUTHNZ_BASIC = """\
# mod_authnz_fcgi: a provider of type authnz named in AuthBasicProvider.
AuthnzFcgiDefineProvider authnz @NAME@_authnz fcgi://@BACKEND_HOST@:@BACKEND_PORT@/
Listen @LISTEN_HOST@:@LISTEN_PORT@
<VirtualHost @LISTEN_HOST@:@LISTEN_PORT@>
    ProxyPass "/basic/" "fcgi://@BACKEND_HOST@:@BACKEND_PORT@/basic/"
    <Location "/basic/">
        AuthType Basic
        AuthName "@REALM@"
        AuthBasicProvider @NAME@_authnz
        Require valid-user
    </Location>
</VirtualHost>
"""


@pytest.fixture(scope="module")
def apache_authnz(request, run_dir, authed):
    template = Path(run_dir) / "tmp" / "apache-authnz-basic.conf"
    template.parent.mkdir(exist_ok=True)
    template.write_text(APACHE_AUTHNZ_BASIC)
    # An absolute template path: SitesFrontEnd reads it instead of conf/apache/.
    fe = SitesFrontEnd(run_dir, "apache", {"basic": (str(template), {
        "BACKEND_PORT": authed.ports["fastcgi"], "REALM": REALM, "NAME": "hardening"})},
        label="authnz-basic")
    request.addfinalizer(fe.stop)
    return fe.ports["basic"]


def basic(user, password):
    return ("Authorization", "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode())


def test_behind_apache_an_authnz_provider_in_auth_basic_provider_lets_the_right_password_through(
        apache_authnz, authed, run_dir):
    """Item 13 behind real Apache httpd: the application sees the user; a
    wrong password or none gets Apache's 401, and the application never
    runs; wsgi-fpm answered a generic authorizer (no FCGI_APACHE_ROLE)."""
    t = tag()
    r = client.request(apache_authnz, "GET", "/basic/page", headers=[basic("alice", PASSWORDS["alice"]), t])
    assert r.status == 200, r
    assert r.json()["REMOTE_USER"] == "alice", r
    assert t[1] in app_runs(run_dir)
    stranger = "zed-" + uuid.uuid4().hex[:8]
    for who, headers in (("wrong password", [basic("alice", WRONG)]), ("unknown user", [basic(stranger, WRONG)]),
                         ("no credentials", [])):
        t = tag()
        r = client.request(apache_authnz, "GET", "/basic/page", headers=headers + [t])
        assert r.status == 401, (who, r)
        assert t[1] not in app_runs(run_dir), who
    # Asked as a generic authorizer, with the credentials Apache decoded.
    log_line(authed, 'auth Authorizer: 401: user "%s": no such user' % stranger)


# ------------------------------------------------------------------ item 20: params in many records

def test_a_legal_params_block_split_into_two_thousand_records_is_accepted(limits):
    """Item 20: 200 KB of params in 2,000 records of 100 bytes (with their
    headers about 216 KB, within --max-params-size 256K) are one request."""
    params = fcgi_params("/env", headers=[("X-Big", "v" * 200000)])
    block = b"".join(fcgi_nv(k, v) for k, v in params)
    step = len(block) // 2000
    pieces = [block[i:i + step] for i in range(0, len(block), step)]
    assert len(pieces) >= 2000
    data = fcgi_begin(1) + b"".join(fcgi_record(FCGI_PARAMS, 1, p) for p in pieces)
    data += fcgi_record(FCGI_PARAMS, 1) + fcgi_record(FCGI_STDIN, 1)
    sock = wire.connect(limits.addr("fastcgi"), timeout=10)
    try:
        sock.sendall(data)
        out, _, end = wire.FcgiReader(sock).response(1)
    finally:
        sock.close()
    status, _, _, body = wire.parse_head(out, "cgi")
    assert (status, end) == (200, (0, wire.FCGI_REQUEST_COMPLETE)), out[:300]
    assert json.loads(body)["HTTP_X_BIG"] == "v" * 200000


def test_a_params_block_trickled_in_one_byte_records_counts_their_headers(limits):
    """Item 20: 40 KB of params is legal, but sent one byte per record it
    costs 9 bytes a byte (360 KB with the 8-byte headers), over
    --max-params-size 256K: 431 with END_REQUEST, and the connection closes."""
    params = fcgi_params("/env", headers=[("X-Mid", "m" * 40000)])
    block = b"".join(fcgi_nv(k, v) for k, v in params)
    data = fcgi_begin(1) + b"".join(fcgi_record(FCGI_PARAMS, 1, block[i:i + 1]) for i in range(len(block)))
    data += fcgi_record(FCGI_PARAMS, 1) + fcgi_record(FCGI_STDIN, 1)
    sock = wire.connect(limits.addr("fastcgi"), timeout=10)
    where = peer(sock)
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        records, closed = read_records(sock, 5)
    finally:
        sock.close()
    assert closed, "the connection stayed open"
    assert wire.parse_head(stdout_of(records, 1), "cgi")[0] == 431, records[:3]
    assert end_of(records, 1) == (0, wire.FCGI_REQUEST_COMPLETE), records
    log_line(limits, where, "--max-params-size")
    # The same block in one record is fine.
    r = wire.fcgi_request(limits.addr("fastcgi"), params, timeout=10)
    assert r.status == 200, r


# ------------------------------------------------------------------ item 21: no REQUEST_METHOD

def without_method(protocol):
    return [(k, v) for k, v in wire.cgi_params("GET", "/env", headers=[tag()], protocol=protocol)
            if k != "REQUEST_METHOD"]


def refused_without_method(backend, protocol, data, run_dir, t=None):
    """Sends `data`; the answer must be a 400 that the application never saw,
    and the log must name the peer and the missing REQUEST_METHOD."""
    sock = wire.connect(backend.addr(protocol), timeout=10)
    where = peer(sock)
    try:
        sock.sendall(data)
        if protocol == "fastcgi":
            out, _, end = wire.FcgiReader(sock).response(1)
            assert end == (0, wire.FCGI_REQUEST_COMPLETE), end
        else:
            closed, out = wire.wait_closed(sock, 5)
            assert closed
    finally:
        sock.close()
    status = wire.parse_head(out, "http" if protocol == "uwsgi" else "cgi")[0]
    assert status == 400, out[:300]
    assert b"REQUEST_METHOD" not in out
    assert not (t and t in app_runs(run_dir)), "the request reached the application"
    log_line(backend, where, "REQUEST_METHOD")


def test_a_responder_request_without_request_method_is_400_and_never_reaches_the_application(
        limits, protocol, run_dir):
    """Item 21: a FastCGI RESPONDER, SCGI or uwsgi request without
    REQUEST_METHOD is answered 400, logged with the peer and the reason,
    and the application never sees it."""
    t = tag()
    params = [(k, v) for k, v in wire.cgi_params("GET", "/env", headers=[t], protocol=protocol)
              if k != "REQUEST_METHOD"]
    data = wire.head_bytes(protocol, params)
    if protocol == "fastcgi":
        data += fcgi_record(FCGI_STDIN, 1)
    refused_without_method(limits, protocol, data, run_dir, t[1])


def test_a_uwsgi_packet_with_an_empty_vars_block_is_400(limits, run_dir):
    """Item 21: modifier1 0, size 0, modifier2 0 and nothing else."""
    refused_without_method(limits, "uwsgi", b"\x00\x00\x00\x00", run_dir)


def test_an_authorizer_request_without_request_method_gets_the_defaults(authed):
    """Item 21: FastCGI AUTHORIZER requests (front ends omit CGI variables)
    are not refused for a missing REQUEST_METHOD: the defaults fill in and
    the credentials decide (lighttpd's shape, with HTTP_AUTHORIZATION)."""
    def ask(password):
        params = [(k, v) for k, v in fcgi_params("/private", headers=[basic("alice", password)])
                  if k != "REQUEST_METHOD"]
        return fcgi_authorizer(authed.addr("fastcgi"), params)

    r = ask(PASSWORDS["alice"])
    assert (r.status, r.header("Variable-REMOTE_USER")) == (200, "alice"), r
    assert ask(WRONG).status == 401


# ------------------------------------------------------------------ item 22: CONTENT_LENGTH twice

@pytest.mark.parametrize("first,second,body", [("", "11", b"hello world"), ("11", "", b""),
                                               ("11", "", b"hello world"), ("11", "11", b"hello world")])
def test_content_length_sent_twice_with_one_value_is_answered_normally(plain, first, second, body):
    """Item 22: nginx's auth_request recipe sends CONTENT_LENGTH twice, the
    stock one and an empty one (and, with fastcgi_pass_request_body off,
    no body): the request is served; the environ keeps the last value, as
    for every repeated meta-variable."""
    params = fcgi_params("/env", method="POST", extra=[("CONTENT_LENGTH", first), ("CONTENT_LENGTH", second)])
    r = wire.fcgi_request(plain.addr("fastcgi"), params, body=body, timeout=10)
    assert (r.status, r.end) == (200, (0, wire.FCGI_REQUEST_COMPLETE)), r
    env = json.loads(r.body)
    assert (env["CONTENT_LENGTH"], env["__body__"]) == (second, body.decode()), env


def test_content_length_sent_twice_with_two_values_is_400_and_never_reaches_the_application(plain, run_dir):
    """Item 22: CONTENT_LENGTH "5" and "6": the body's end is in doubt, 400."""
    t = tag()
    params = fcgi_params("/env", method="POST", headers=[t],
                         extra=[("CONTENT_LENGTH", "5"), ("CONTENT_LENGTH", "6")])
    sock = wire.connect(plain.addr("fastcgi"), timeout=10)
    try:
        sock.sendall(fcgi_begin(1, keep_conn=True) + fcgi_params_block(params)
                     + fcgi_record(FCGI_STDIN, 1, b"hello") + fcgi_record(FCGI_STDIN, 1))
        out, _, end = wire.FcgiReader(sock).response(1)
        assert wire.parse_head(out, "cgi")[0] == 400, out
        assert end == (0, wire.FCGI_REQUEST_COMPLETE), end
    finally:
        sock.close()
    assert t[1] not in app_runs(run_dir)


# ------------------------------------------------------------------ items 14, 16: recycling under load

def nginx_one_per_request(request, run_dir, backend, label):
    """nginx over FastCGI without connection reuse (conf/nginx/fastcgi.conf):
    one connection per request."""
    fe = SitesFrontEnd(run_dir, "nginx", {"plain": ("fastcgi.conf", {
        "BACKEND_PORT": backend.ports["fastcgi"], "MOUNT": "", "NAME": "hardening_" + label.replace("-", "_")})},
        label=label)
    request.addfinalizer(fe.stop)
    return fe.ports["plain"]


def nginx_keepalive(request, run_dir, backend, label):
    """nginx with fastcgi_keep_conn on and an upstream keepalive pool
    (conf/nginx/fastcgi-keepalive.conf) in front of `backend`."""
    fe = SitesFrontEnd(run_dir, "nginx", {"ka": ("fastcgi-keepalive.conf", {
        "BACKEND_PORT": backend.ports["fastcgi"], "MOUNT": "", "NAME": "hardening_" + label.replace("-", "_")})},
        label=label)
    request.addfinalizer(fe.stop)
    return fe.ports["ka"]


class Load:
    """`threads` clients, each on its own keep-alive HTTP connection to the
    front end, sending requests until stopped; every answer is checked."""

    UPLOAD = hashlib.sha256(b"upload").digest() * 256  # 8 KiB

    def __init__(self, port, threads, posts=True):
        self.port = port
        self.posts = posts
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses = {}
        self.errors = []
        self.pids = {}
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _one(self, conn, n):
        if self.posts and n % 2 == 0:
            conn.request("POST", "/upload", body=self.UPLOAD, headers={"Content-Type": "application/octet-stream"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200:
                got = json.loads(body)
                if (got["length"], got["sha256"]) != (len(self.UPLOAD), hashlib.sha256(self.UPLOAD).hexdigest()):
                    raise AssertionError("upload answered %r" % got)
            return resp.status, None
        conn.request("GET", "/pid")
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, (int(body) if resp.status == 200 else None)

    def _run(self, i):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                status, pid = self._one(conn, n)
            except Exception as e:  # any failure at all counts
                with self.lock:
                    self.errors.append("%s: %s" % (type(e).__name__, e))
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
                continue
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if pid is not None:
                    self.pids[pid] = self.pids.get(pid, 0) + 1
        conn.close()

    @property
    def total(self):
        return sum(self.statuses.values())


def test_reloads_and_recycling_under_keep_alive_load_lose_no_request(request, run_dir, spawn):
    """Item 14: nginx keeps FastCGI connections open (fastcgi_keep_conn on,
    upstream keepalive); 4 clients send keep-alive GETs and POSTs for 3 s
    while the master gets SIGHUP twice and --maximum-requests 10 recycles
    workers: a retiring worker finishes what its kept connections carry,
    and no client sees a 502 or any other error."""
    b = spawn("hardening-reload", APP, "--processes", "2", "--threads", "4", "--maximum-requests", "10",
              protocols=("fastcgi",))
    port = nginx_keepalive(request, run_dir, b, "keepalive-reload")
    assert client.request(port, "GET", "/pid", timeout=10).status == 200
    with Load(port, 4) as load:
        for _ in range(2):
            time.sleep(1.0)
            os.kill(b.pid, signal.SIGHUP)
        time.sleep(1.0)
    assert not load.errors, "%d errors, e.g. %r; statuses %r" % (len(load.errors), load.errors[:3], load.statuses)
    assert set(load.statuses) == {200}, load.statuses
    assert load.total > 50, load.statuses
    # The workers did change meanwhile: recycled and reloaded.
    assert len(load.pids) >= 4, load.pids
    assert "502" not in (Path(run_dir) / "nginx-keepalive-reload" / "logs" / "access.log").read_text()


def test_maximum_requests_bounds_what_a_worker_serves_under_concurrent_load(request, run_dir, spawn):
    """Item 16: --maximum-requests 25 under 4 concurrent clients through
    nginx, one FastCGI connection per request: a worker at its limit stops
    accepting, so none serves more than 25 plus the few requests already
    in flight. (Requests on connections a front end keeps are still
    answered while it keeps using them: closing a kept connection loses the
    request the front end may be sending on it; see the test above.)"""
    clients = 4
    b = spawn("hardening-maxreq", APP, "--processes", "2", "--threads", "4", "--maximum-requests", "25",
              protocols=("fastcgi",))
    port = nginx_one_per_request(request, run_dir, b, "plain-maxreq")
    with Load(port, clients, posts=False) as load:
        wait_for(lambda: load.total >= 300 or load.errors, timeout=30, what="300 requests")
    assert not load.errors, "%d errors, e.g. %r" % (len(load.errors), load.errors[:3])
    assert set(load.statuses) == {200}, load.statuses
    worst = max(load.pids.values())
    assert worst <= 25 + clients, "a worker served %d requests with --maximum-requests 25: %r" % (worst, load.pids)
    assert len(load.pids) >= load.total // (25 + clients), load.pids
    assert worst >= 20, "no worker came near its limit: %r" % load.pids
