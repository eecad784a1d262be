"""The nginx sites bench/run writes for uWSGI (bench/lib/stacks.py): uWSGI
routes by PATH_INFO as the front end sends it, and nginx's stock
fastcgi_params and scgi_params send none (fastcgi_params sends the whole path
as SCRIPT_NAME), so its sites add them. Pure: nothing is started."""
import re
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "lib"))

import stacks as stk  # noqa: E402


def included(site):
    """The params file a site includes, and its pass directive's word."""
    include = re.search(r"include (\S+);", site).group(1)
    directive = re.search(r"(\w+_pass) ", site).group(1)
    return Path(include), directive


@pytest.mark.parametrize("proto", ["fastcgi", "scgi"])
def test_uwsgi_sites_send_an_empty_script_name_and_the_path_as_path_info(tmp_path, proto):
    stack = stk.Uwsgi(proto)
    site = stack.nginx_site(types.SimpleNamespace(workdir=tmp_path))
    params, directive = included(site)
    assert directive == proto + "_pass"
    assert "%s_pass 127.0.0.1:%d;" % (proto, stack.backend_port) in site
    assert params.parent.parent == tmp_path, "a params file of the run's own, not the stock one"
    lines = [line.split() for line in params.read_text().splitlines() if line.strip()]
    by_name = {words[1]: words[2:] for words in lines if words[0] == proto + "_param"}
    assert by_name["SCRIPT_NAME"] == ['"";']
    assert by_name["PATH_INFO"] == ["$uri;"]
    assert [w for w in lines if len(w) > 1 and w[1] == "SCRIPT_NAME"] == [[proto + "_param", "SCRIPT_NAME", '"";']]
    # The rest of the stock file is kept: the request's method and URI.
    assert by_name["REQUEST_METHOD"] == ["$request_method;"]
    assert by_name["REQUEST_URI"] == ["$request_uri;"]


def test_the_uwsgi_protocol_site_uses_the_stock_params_which_carry_path_info(tmp_path):
    stack = stk.Uwsgi("uwsgi")
    site = stack.nginx_site(types.SimpleNamespace(workdir=tmp_path))
    params, directive = included(site)
    assert (params, directive) == (Path("/etc/nginx/uwsgi_params"), "uwsgi_pass")
    assert re.search(r"uwsgi_param\s+PATH_INFO\s+\$document_uri;", params.read_text())


def test_every_protocol_has_its_uwsgi_peer():
    peers = {s.proto for s in stk.all_stacks() if isinstance(s, stk.Uwsgi)}
    own = {s.proto for s in stk.own_stacks()}
    assert peers == own == {"fastcgi", "uwsgi", "scgi"}
