"""Many requests at once, and kept FastCGI connections (SPEC §2, §3)."""
from concurrent.futures import ThreadPoolExecutor

import pytest

import wire

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
