"""Beyond one machine (SPEC §9) and the status subcommand (SPEC §4, §8):
the cluster files in conf/cluster/ run as they are, the Kubernetes probes
get 200 from a running master's --status port, and `wsgi-fpm status` says
how to name the master it asks. (What /status and /metrics report is in
test_operations.py.)
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import client
from harness import APPS, CONF, HOST, SitesFrontEnd, WsgiFpm, fill, free_ports, wait_for, wsgi_fpm_bin

LIFECYCLE = APPS / "lifecycle.py"
UPSTREAM = CONF / "cluster" / "nginx-upstream.conf"
KUBERNETES = CONF / "cluster" / "kubernetes.yaml"


def nginx_bin():
    return shutil.which("nginx") or "/usr/sbin/nginx"


needs_nginx = pytest.mark.skipif(not Path(nginx_bin()).exists(), reason="nginx is not installed")


# ------------------------------------------------------------------ nginx upstream

@needs_nginx
def test_the_cluster_upstream_configuration_passes_nginx_t():
    ports = free_ports(5)
    with tempfile.TemporaryDirectory(prefix="wsgi-fpm-nginx-t-") as d:
        work = Path(d)
        for sub in ("logs", "tmp", "sites"):
            (work / sub).mkdir()
        (work / "nginx.conf").write_text(fill(CONF / "nginx" / "nginx.conf", {"WORKDIR": work}))
        (work / "sites" / "cluster.conf").write_text(fill(UPSTREAM, {
            "LISTEN_HOST": HOST, "LISTEN_PORT": ports[0],
            "NODE1_ADDR": "%s:%d" % (HOST, ports[1]), "NODE2_ADDR": "%s:%d" % (HOST, ports[2]),
            "NODE1_STATUS": "%s:%d" % (HOST, ports[3]), "NODE2_STATUS": "%s:%d" % (HOST, ports[4]),
        }))
        out = subprocess.run([nginx_bin(), "-t", "-p", work, "-c", work / "nginx.conf",
                              "-e", work / "logs" / "error.log"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "test is successful" in out.stderr


def _pid(port):
    r = client.get(port, "/pid", timeout=10)
    assert r.status == 200, r
    return int(r.body)


@needs_nginx
def test_the_cluster_upstream_spreads_requests_and_passes_over_a_node_that_is_down(request, run_dir, spawn):
    nodes = [spawn("cluster-node%d" % i, LIFECYCLE, "--processes", "1", protocols=("fastcgi",))
             for i in (1, 2)]
    status_ports = free_ports(2)
    values = {"NODE%d_ADDR" % (i + 1): "%s:%d" % n.addr("fastcgi") for i, n in enumerate(nodes)}
    values.update({"NODE%d_STATUS" % (i + 1): "%s:%d" % (HOST, p) for i, p in enumerate(status_ports)})
    fe = SitesFrontEnd(run_dir, "nginx", {"cluster": ("../cluster/nginx-upstream.conf", values)},
                       label="cluster")
    request.addfinalizer(fe.stop)
    port = fe.ports["cluster"]
    seen = {_pid(port) for _ in range(8)}
    assert len(seen) == 2, "round robin over two single-process nodes reached %s" % seen
    # A rolling restart: one node goes away; nginx marks it failed and every
    # request is still answered, by the other node.
    nodes[1].stop()
    answers = [_pid(port) for _ in range(8)]
    assert len(set(answers)) == 1, answers
    assert set(answers) < seen


# ------------------------------------------------------------------ kubernetes

def _k8s():
    import yaml  # integration/test-all.sh installs it
    docs = list(yaml.safe_load_all(KUBERNETES.read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    return deployment, service


def _option(args, name):
    return args[args.index(name) + 1]


def test_the_kubernetes_deployment_probes_the_status_port_and_outlives_the_shutdown_timeout():
    deployment, service = _k8s()
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    status_port = int(_option(args, "--status").rsplit(":", 1)[1])
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/status")):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, status_port), probe
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(_option(args, "--shutdown-timeout")) + int(pre_stop[1])
    fastcgi_port = int(_option(args, "--fastcgi").rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["fastcgi"], ports["status"]) == (fastcgi_port, status_port)
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_kubernetes_probes_get_200_from_a_running_master(spawn):
    """The probes' exact requests (path from the YAML) against a master run
    with --status on a loopback port."""
    deployment, _ = _k8s()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    probes = [container[p]["httpGet"] for p in ("readinessProbe", "livenessProbe")]
    port = free_ports(1)[0]
    spawn("k8s-probes", LIFECYCLE, "--status", "%s:%d" % (HOST, port), protocols=("fastcgi",))
    ready, alive = ("http://%s:%d%s" % (HOST, port, p["path"]) for p in probes)
    with urllib.request.urlopen(ready, timeout=5) as r:
        assert (r.status, r.read()) == (200, b"ready\n")
    with urllib.request.urlopen(alive, timeout=5) as r:
        assert r.status == 200
        assert "main" in json.loads(r.read())["pools"]


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def test_the_readiness_probe_fails_while_the_application_cannot_load_and_liveness_holds(stack, tmp_path):
    """A pod whose application does not load gets no traffic (readiness
    503, naming the pool) and is not restarted for it (liveness 200)."""
    deployment, _ = _k8s()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ready_path = container["readinessProbe"]["httpGet"]["path"]
    alive_path = container["livenessProbe"]["httpGet"]["path"]
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('broken on purpose')\n")
    port = free_ports(1)[0]
    b = WsgiFpm(stack.run_dir, "k8s-not-ready", broken, ("--status", "%s:%d" % (HOST, port)),
                protocols=("fastcgi",))
    try:
        base = "http://%s:%d" % (HOST, port)
        wait_for(lambda: _get(base + alive_path)[0] == 200, timeout=10, what="the status endpoint")
        time.sleep(1.0)  # a few failed starts
        status, body = _get(base + ready_path)
        assert status == 503 and b"main" in body, (status, body)
        assert _get(base + alive_path)[0] == 200
    finally:
        b.stop()


# ------------------------------------------------------------------ the subcommand

def test_status_without_an_address_says_how_to_give_one():
    out = subprocess.run([wsgi_fpm_bin(), "status"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "--config" in out.stderr and "unix:" in out.stderr, out.stderr


def test_status_of_a_master_that_is_not_there_fails_with_its_address():
    port = free_ports(1)[0]
    out = subprocess.run([wsgi_fpm_bin(), "status", "%s:%d" % (HOST, port)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "%s:%d" % (HOST, port) in out.stderr, out.stderr


def test_status_reads_the_address_from_the_configuration_file(tmp_path):
    port = free_ports(1)[0]
    conf = tmp_path / "wsgi-fpm.toml"
    conf.write_text('[server]\nstatus = "%s:%d"\n\n[pools.main]\napp = "/srv/app.py"\n' % (HOST, port))
    out = subprocess.run([wsgi_fpm_bin(), "status", "--config", conf],
                         capture_output=True, text=True, timeout=30)
    # Nothing listens there: the error names the address taken from the file.
    assert out.returncode == 1
    assert "%s:%d" % (HOST, port) in out.stderr, out.stderr


# ------------------------------------------------------------------ access to the endpoint

def test_a_unix_status_socket_gets_its_mode_and_group_and_answers_the_subcommand(spawn, tmp_path):
    import grp
    import socket
    import stat
    path = tmp_path / "status.sock"
    group = grp.getgrgid(65534).gr_name  # nogroup
    spawn("status-unix", LIFECYCLE, "--status", "unix:%s" % path, "--status-socket-mode", "0660",
          "--status-socket-group", group, protocols=("fastcgi",))
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert st.st_gid == 65534
    out = subprocess.run([wsgi_fpm_bin(), "status", "unix:%s" % path, "--json"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert "main" in json.loads(out.stdout)["pools"]
    # Plain HTTP on the socket, as a scraper through a Unix socket would.
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(str(path))
    s.sendall(b"GET /ready HTTP/1.0\r\n\r\n")
    answer = b""
    while chunk := s.recv(4096):
        answer += chunk
    s.close()
    assert answer.startswith(b"HTTP/1.0 200 ") and answer.endswith(b"ready\n"), answer


def test_a_peer_outside_the_status_allowed_clients_gets_not_a_byte(spawn):
    import socket
    port = free_ports(1)[0]
    spawn("status-allowed", LIFECYCLE, "--status", "%s:%d" % (HOST, port),
          "--status-allowed-clients", "192.0.2.7", protocols=("fastcgi",))
    s = socket.create_connection((HOST, port), timeout=5)
    try:
        s.sendall(b"GET /status HTTP/1.0\r\n\r\n")
        try:
            got = s.recv(4096)
        except ConnectionResetError:
            got = b""
    finally:
        s.close()
    assert got == b"", got
