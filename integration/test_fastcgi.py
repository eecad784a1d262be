"""FastCGI features that no front end here exercises but SPEC §2 requires:
management records, multiplexing, abort, roles, padding and long lengths.
Straight to wsgi-fpm's FastCGI socket with the independent client in wire.py.
"""
import json
import struct
import time

import pytest

import wire
from wire import (FCGI_ABORT_REQUEST, FCGI_END_REQUEST, FCGI_GET_VALUES, FCGI_GET_VALUES_RESULT,
                  FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT, FCGI_UNKNOWN_TYPE, fcgi_begin,
                  fcgi_nv, fcgi_params_block, fcgi_record)


@pytest.fixture
def fcgi(stack):
    b = stack.backend("main")
    sock = wire.connect(b.addr("fastcgi"), timeout=15)
    yield sock
    sock.close()


def params_for(path, query=""):
    return wire.cgi_params("GET", path, query, protocol="fastcgi")


def test_get_values_reports_max_conns_max_reqs_and_multiplexing(fcgi):
    names = b"".join(fcgi_nv(n, b"") for n in (b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"))
    fcgi.sendall(fcgi_record(FCGI_GET_VALUES, 0, names))
    _, rtype, rid, content = wire.FcgiReader(fcgi).record()
    assert (rtype, rid) == (FCGI_GET_VALUES_RESULT, 0)
    values = dict(wire.fcgi_nv_decode(content))
    assert set(values) == {b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"}, values
    assert values[b"FCGI_MPXS_CONNS"] == b"1"
    assert int(values[b"FCGI_MAX_CONNS"]) > 0 and int(values[b"FCGI_MAX_REQS"]) > 0


def test_get_values_does_not_disturb_a_kept_connection(fcgi):
    fcgi.sendall(fcgi_record(FCGI_GET_VALUES, 0, fcgi_nv(b"FCGI_MPXS_CONNS", b"")))
    reader = wire.FcgiReader(fcgi)
    assert reader.record()[1] == FCGI_GET_VALUES_RESULT
    r = wire.fcgi_request(None, params_for("/hello"), keep_conn=True, sock=fcgi)
    assert (r.status, r.body) == (200, b"Hello, world!")


def test_unknown_management_record_gets_unknown_type_and_the_connection_lives(fcgi):
    fcgi.sendall(fcgi_record(42, 0, b"whatever"))
    _, rtype, rid, content = wire.FcgiReader(fcgi).record()
    assert (rtype, rid) == (FCGI_UNKNOWN_TYPE, 0)
    assert content[0] == 42
    r = wire.fcgi_request(None, params_for("/hello"), keep_conn=True, sock=fcgi)
    assert r.status == 200


def test_multiplexed_requests_on_one_connection_each_get_their_answer(fcgi):
    # Two requests interleaved: ids 1 and 2, the slow one first.
    fcgi.sendall(fcgi_begin(1, keep_conn=True) + fcgi_begin(2, keep_conn=True))
    fcgi.sendall(fcgi_params_block(params_for("/sleep", "n=one&s=0.5"), 1))
    fcgi.sendall(fcgi_params_block(params_for("/sleep", "n=two&s=0"), 2))
    fcgi.sendall(fcgi_record(FCGI_STDIN, 2) + fcgi_record(FCGI_STDIN, 1))
    reader = wire.FcgiReader(fcgi)
    out, ended = {1: b"", 2: b""}, []
    deadline = time.monotonic() + 10
    while len(ended) < 2 and time.monotonic() < deadline:
        _, rtype, rid, content = reader.record()
        if rtype == FCGI_STDOUT:
            out[rid] += content
        elif rtype == FCGI_END_REQUEST:
            assert struct.unpack(">IB3x", content)[1] == 0, "protocol status for id %d" % rid
            ended.append(rid)
    assert ended == [2, 1], "the quick request should not wait for the slow one: %r" % ended
    for rid, n in ((1, "one"), (2, "two")):
        status, _, _, body = wire.parse_head(out[rid], "cgi")
        assert status == 200 and json.loads(body)["n"] == n


def test_abort_request_ends_that_request_with_end_request(fcgi, run_dir):
    fcgi.sendall(fcgi_begin(1, keep_conn=True) + fcgi_params_block(params_for("/closerec", "marker=%s/tmp/abort-marker&seconds=20" % run_dir))
                 + fcgi_record(FCGI_STDIN, 1))
    reader = wire.FcgiReader(fcgi)
    assert reader.record()[1] == FCGI_STDOUT  # it is streaming
    fcgi.sendall(fcgi_record(FCGI_ABORT_REQUEST, 1))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, rtype, rid, content = reader.record()
        if rtype == FCGI_END_REQUEST:
            assert rid == 1
            break
    else:
        pytest.fail("no FCGI_END_REQUEST within 10 s of FCGI_ABORT_REQUEST")
    # The kept connection goes on serving.
    r = wire.fcgi_request(None, params_for("/hello"), keep_conn=True, sock=fcgi)
    assert r.status == 200


def test_filter_role_gets_unknown_role_and_the_connection_lives(fcgi):
    fcgi.sendall(fcgi_begin(1, keep_conn=True, role=wire.FCGI_FILTER) + fcgi_params_block(params_for("/hello")))
    reader = wire.FcgiReader(fcgi)
    while True:
        _, rtype, rid, content = reader.record()
        if rtype == FCGI_END_REQUEST:
            break
    assert struct.unpack(">IB3x", content)[1] == wire.FCGI_UNKNOWN_ROLE
    r = wire.fcgi_request(None, params_for("/hello"), keep_conn=True, sock=fcgi, req_id=3)
    assert r.status == 200


def test_padding_and_four_byte_lengths_are_accepted(fcgi):
    long_value = "v" * 300  # 4-byte value length
    params = params_for("/padded") + [("HTTP_X_LONG", long_value)]
    block = b"".join(fcgi_nv(k, v) for k, v in params)
    # Name written with a 4-byte length although it is short (legal, Apache does it).
    block += struct.pack(">I", 0x80000000 | 11) + bytes([3]) + b"HTTP_X_FOUR" + b"yes"
    data = fcgi_begin(1)
    data += fcgi_record(FCGI_PARAMS, 1, block[:100], padding=7)
    data += fcgi_record(FCGI_PARAMS, 1, block[100:], padding=255)  # split mid-pair
    data += fcgi_record(FCGI_PARAMS, 1, padding=3)
    data += fcgi_record(FCGI_STDIN, 1, padding=5)
    fcgi.sendall(data)
    out, _, end = wire.FcgiReader(fcgi).response(1)
    status, _, _, body = wire.parse_head(out, "cgi")
    assert status == 200
    env = json.loads(body)
    assert env["HTTP_X_LONG"] == long_value
    assert env["HTTP_X_FOUR"] == "yes"


def test_large_response_is_split_into_records_of_at_most_65535_bytes(fcgi):
    fcgi.sendall(fcgi_begin(1) + fcgi_params_block(params_for("/download", "size=300000"))
                 + fcgi_record(FCGI_STDIN, 1))
    reader = wire.FcgiReader(fcgi)
    total = 0
    while True:
        _, rtype, rid, content = reader.record()
        assert len(content) <= 65535
        if rtype == FCGI_STDOUT:
            total += len(content)
        if rtype == FCGI_END_REQUEST:
            break
    assert total > 300000
