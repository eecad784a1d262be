"""Many requests at once, and kept FastCGI connections (SPEC §2, §3)."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import wire
from harness import APPS

CONCURRENT = 100


def test_100_concurrent_requests_each_get_their_own_answer(fe):
    route = fe.route("main")

    def one(n):
        r = route.get("/sleep?n=%d&s=0.05" % n, timeout=60)
        return n, r

    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(one, range(CONCURRENT)))
    bad = [(n, r) for n, r in results if r.status != 200 or r.json().get("n") != str(n)]
    assert not bad, "%d of %d wrong, e.g. %r" % (len(bad), CONCURRENT, bad[:3])
    ids = {r.json()["request_id"] for _, r in results}
    assert len(ids) == CONCURRENT, "wsgi_fpm.request_id repeated among concurrent requests"


@pytest.mark.frontends("nginx-fastcgi-keepconn", "apache-fastcgi-reuse")
def test_kept_connections_serve_many_requests_over_few_backend_connections(fe):
    route = fe.route("main")
    assert route.relay is not None
    assert route.get("/hello").status == 200  # warm up the front end's pool
    route.relay.reset()
    n = 30
    for i in range(n):
        r = route.get("/hello")
        assert (r.status, r.body) == (200, b"Hello, world!"), (i, r)
    opened = route.relay.connections
    # nginx keeps one connection per worker; Apache one pool per child process.
    assert opened <= 8, "%d backend connections for %d sequential requests: FCGI_KEEP_CONN not honoured" % (opened, n)


def test_fastcgi_keep_conn_serves_sequential_requests_on_one_connection(stack):
    b = stack.backend("main")
    sock = wire.connect(b.addr("fastcgi"))
    try:
        for i in range(5):
            params = wire.cgi_params("GET", "/hello", protocol="fastcgi")
            r = wire.fcgi_request(None, params, keep_conn=True, sock=sock)
            assert (r.status, r.body) == (200, b"Hello, world!"), (i, r)
            assert r.end == (0, 0) or r.end[1] == 0, r.end
    finally:
        sock.close()


def _at_once(backend, n, query):
    """n requests to /sleep at once, each on its own FastCGI connection."""
    def one(i):
        r = wire.request("fastcgi", backend.addr("fastcgi"), path="/sleep", query="n=%d&%s" % (i, query),
                         timeout=30)
        assert r.status == 200, r
        return json.loads(r.body)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_sleeping_requests_fill_every_thread_of_a_worker(spawn):
    """Threads that leave the GIL idle (sleeping, waiting on I/O) let the
    worker's other threads take the next requests at once."""
    b = spawn("gate-sleep", APPS / "router.py", "--processes", "1", "--threads", "4",
              protocols=("fastcgi",))
    started = time.monotonic()
    answers = _at_once(b, 4, "s=1")
    took = time.monotonic() - started
    assert len({a["thread"] for a in answers}) == 4, answers
    assert took < 1.9, "4 one-second sleeps on 4 threads took %.1f s" % took


def test_threads_that_sleep_briefly_let_the_others_take_requests(spawn):
    """Sleeps shorter than the 5 ms after which any request lets another
    thread take work: only the GIL found idle lets them run side by side."""
    b = spawn("gate-short-sleep", APPS / "router.py", "--processes", "1", "--threads", "4",
              protocols=("fastcgi",))
    answers = _at_once(b, 24, "s=0.003")
    spans = sorted((a["began"], a["ended"]) for a in answers)
    most = max(sum(1 for began, ended in spans if began <= at < ended) for at, _ in spans)
    assert most >= 2, "3 ms sleeps ran one at a time on a 4-thread worker: %r" % spans
    assert len({a["thread"] for a in answers}) >= 2, answers


def test_cpu_bound_requests_arriving_together_run_one_after_another(spawn):
    """Requests that hold the GIL are served one at a time by the thread
    that finishes the last one, not handed to threads that would only wait
    for the GIL: few of them overlap (a 4-thread worker that let every
    free thread take one would run them four at a time)."""
    b = spawn("gate-spin", APPS / "router.py", "--processes", "1", "--threads", "4",
              protocols=("fastcgi",))
    _at_once(b, 4, "spin=0.001")  # warm up
    answers = _at_once(b, 12, "spin=0.002")
    spans = sorted((a["began"], a["ended"]) for a in answers)
    overlapping = sum(
        1 for i, (began, ended) in enumerate(spans)
        if any(o_began < ended and began < o_ended for j, (o_began, o_ended) in enumerate(spans) if j != i))
    assert overlapping <= 4, "%d of 12 CPU-bound requests overlapped: %r" % (overlapping, spans)


def test_new_connections_take_turns_with_the_kept_ones(spawn):
    """Connections waiting in the listen queue are not served only once
    every ready kept connection has had its turn again (`net::turns`): once
    an accept has found one, the queue and the kept connections alternate.
    nginx opens new connections when its keepalive pool runs short; those
    requests waited seconds behind 10 MiB responses before."""
    b = spawn("turns", APPS / "router.py", "--processes", "1", "--threads", "1",
              protocols=("fastcgi",))
    kept, new = 4, 8
    stop = threading.Event()
    kept_answers = []

    def keep(i):
        sock = wire.connect(b.addr("fastcgi"))
        try:
            j = 0
            while not stop.is_set():
                params = wire.cgi_params("GET", "/sleep", query="s=0.02&n=kept-%d-%d" % (i, j))
                r = wire.fcgi_request(None, params, keep_conn=True, sock=sock)
                assert r.status == 200, r
                kept_answers.append(json.loads(r.body))
                j += 1
        finally:
            sock.close()

    with ThreadPoolExecutor(kept) as pool:
        loops = [pool.submit(keep, i) for i in range(kept)]
        socks = []
        try:
            time.sleep(0.3)  # the kept connections' requests follow each other
            # All the new requests sent at once, from here: they wait in the
            # listen queue together.
            sent = time.monotonic()
            for j in range(new):
                s = wire.connect(b.addr("fastcgi"))
                socks.append(s)
                params = wire.cgi_params("GET", "/sleep", query="s=0.02&n=new-%d" % j)
                s.sendall(wire.fcgi_begin(1) + wire.fcgi_params_block(params, 1) + wire.fcgi_record(wire.FCGI_STDIN, 1))
            news = []
            for s in socks:
                out, _, _ = wire.FcgiReader(s).response(1)
                status, _, _, body = wire.parse_head(out, "cgi")
                assert status == 200, out
                news.append(json.loads(body))
        finally:
            stop.set()
            for s in socks:
                s.close()
            for f in loops:
                f.result()
    first_new = min(a["began"] for a in news)
    last_new = max(a["began"] for a in news)
    waited = [a["n"] for a in kept_answers if sent <= a["began"] <= last_new]
    among = [a["n"] for a in kept_answers if first_new <= a["began"] <= last_new]
    # Taking turns: about one kept request per new one, plus a round of the
    # kept ones before the first accept; without turns about four per new
    # one (the listener is one entry among the four ready connections).
    assert len(waited) <= 2 * new, "%d kept requests ran while %d new connections waited: %r" % (
        len(waited), new, waited)
    # And turns, not a queue served first: the kept connections go on.
    assert len(among) >= new // 2, "only %d kept requests ran among %d new ones: %r" % (len(among), new, among)
