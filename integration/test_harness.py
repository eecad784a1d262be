"""The harness itself, where a mistake in it would fail tests that have
nothing to do with it."""
import socket

import pytest

import client
import harness
from harness import APPS, HOST, SitesFrontEnd


@pytest.fixture(scope="module")
def backend(spawn_module):
    return spawn_module("harness-plain", APPS / "router.py", "--processes", "1", "--threads", "2")


def test_a_front_end_whose_port_was_taken_starts_again_on_other_ports(backend, run_dir, monkeypatch):
    """Another process may take a port between free_ports' check and the
    front end's bind (a client connection was once given one, and every
    test behind that Apache failed): the front end is started again on
    other ports, and serves."""
    taken = socket.socket()
    try:
        # Bound and not listening, as a client connection's local port is:
        # nginx cannot bind it, and a connection to it is refused.
        taken.bind((HOST, 0))
        port = taken.getsockname()[1]
        real = harness.free_ports
        handed = []

        def first_the_taken_one(n, *args, **kwargs):
            if not handed:
                handed.append(port)
                return [port]
            return real(n, *args, **kwargs)

        monkeypatch.setattr(harness, "free_ports", first_the_taken_one)
        fe = SitesFrontEnd(run_dir, "nginx", {"plain": ("fastcgi.conf", {
            "BACKEND_PORT": backend.ports["fastcgi"], "MOUNT": ""})}, label="harness")
    finally:
        taken.close()
    try:
        assert handed == [port], "the front end was not offered the taken port first"
        assert fe.ports["plain"] != port
        console = (fe.dir / "logs" / "console.log").read_text(errors="replace")
        error_log = (fe.dir / "logs" / "error.log").read_text(errors="replace")
        assert "Address already in use" in console + error_log
        assert "starting again on other ports" in console
        r = client.request(fe.ports["plain"], "GET", "/", timeout=10)
        assert r.status == 200, r
    finally:
        fe.stop()


def test_a_front_end_that_fails_for_another_reason_is_not_started_again(run_dir, tmp_path):
    """Only a port taken meanwhile earns another start: a configuration
    nginx refuses fails at once, with its message, and nothing runs."""
    bad = tmp_path / "bad.conf"
    bad.write_text("server {\n    listen @LISTEN_HOST@:@LISTEN_PORT@;\n"
                   "    no_such_directive on;\n}\n")
    with pytest.raises(harness.StartError) as failed:
        SitesFrontEnd(run_dir, "nginx", {"bad": (str(bad), {})}, label="harness-bad")
    assert "no_such_directive" in str(failed.value)
    assert "(it exited)" in str(failed.value)
    kept = run_dir / "nginx-harness-bad" / "logs" / "console.log"
    assert "starting again on other ports" not in kept.read_text(errors="replace")
