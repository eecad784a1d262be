"""Request and response bodies through every front end (SPEC §3)."""
import hashlib
import json
import os
import socket

import pytest

import client
import wire
from harness import APPS, HOST

import sys
sys.path.insert(0, str(APPS))
from _common import generate, sha256_of_generated  # noqa: E402

MiB = 1024 * 1024
UPLOAD = os.urandom(10 * MiB)
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()
DOWNLOAD_SIZE = 50 * MiB


@pytest.fixture(scope="module")
def download_sha():
    return sha256_of_generated(DOWNLOAD_SIZE)


def test_post_of_10_mib_arrives_intact(fe):
    r = fe.route("main").request("POST", "/upload", body=UPLOAD,
                                 headers=[("Content-Type", "application/octet-stream")])
    assert r.status == 200, r
    got = r.json()
    assert (got["length"], got["sha256"]) == (len(UPLOAD), UPLOAD_SHA)
    assert got["CONTENT_LENGTH"] == str(len(UPLOAD))


def test_download_of_50_mib_arrives_intact(fe, download_sha):
    r = fe.route("main").get("/download?size=%d" % DOWNLOAD_SIZE)
    assert r.status == 200, r
    assert len(r.body) == DOWNLOAD_SIZE
    assert hashlib.sha256(r.body).hexdigest() == download_sha
    assert r.header("Content-Length") == str(DOWNLOAD_SIZE)


def test_head_sends_headers_with_content_length_and_no_body(fe):
    port = fe.route("main").port
    head, body = client.raw_exchange(port, (
        "HEAD /download?size=1000 HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
        % (HOST, port)).encode())
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split(" ")[1] == "200", lines
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    assert headers.get("content-length") == "1000", headers
    assert headers.get("x-seen-method") == "HEAD", "the application did not see REQUEST_METHOD=HEAD"
    assert body == b""


def test_head_answer_from_wsgi_fpm_itself_carries_no_body(stack, protocol):
    # Front ends drop a HEAD body themselves; SPEC §3 says wsgi-fpm must not send it.
    r = stack.backend("main").request(protocol, method="HEAD", path="/download", query="size=1000")
    assert r.status == 200, r
    assert r.header("Content-Length") == "1000"
    assert r.body == b""


def _pieces(data, n):
    return [data[i:i + n] for i in range(0, len(data), n)]


def test_chunked_upload_reaches_the_application_whole(fe):
    data = UPLOAD[:MiB + 12345]
    r = fe.route("main").request("POST", "/upload", body=_pieces(data, 60000), chunked=True)
    if fe.chunked != "ok":
        # The front end's own documented answer (BEHAVIOUR.md §3.2): Apache
        # mod_proxy_scgi / mod_proxy_uwsgi need a length and answer 411.
        assert r.status == fe.chunked, r
        return
    assert r.status == 200, r
    got = r.json()
    assert (got["length"], got["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_empty_post_gives_empty_body_without_blocking(fe):
    r = fe.route("main").request("POST", "/upload", body=b"", timeout=15)
    assert r.status == 200, r
    assert r.json()["length"] == 0


@pytest.mark.parametrize("kind", ["file", "bytesio"])
def test_file_wrapper_sends_the_whole_file(fe, kind):
    size = 3 * MiB + 123
    r = fe.route("main").get("/filewrapper?size=%d&kind=%s" % (size, kind))
    assert r.status == 200, r
    assert len(r.body) == size
    assert hashlib.sha256(r.body).hexdigest() == sha256_of_generated(size)


@pytest.mark.parametrize("mode", ["chunks", "all", "lines", "iter"])
def test_wsgi_input_read_modes_all_see_the_same_body(stack, protocol, mode):
    data = b"".join(b"line %d %s\n" % (i, b"x" * (i % 300)) for i in range(3000))
    r = stack.backend("main").request(protocol, method="POST", path="/upload",
                                      query="mode=" + mode, body=data)
    assert r.status == 200, r
    got = json.loads(r.body)
    assert (got["length"], got["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
