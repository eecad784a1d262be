"""bench/run's round order and its --against pairing (bench/lib/stacks.py):
pure, so tested without timing anything."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "lib"))

import stacks as stk  # noqa: E402


def names(order):
    return [s.name for s in order]


def test_each_round_starts_one_stack_further_on():
    live = [stk.Uwsgi("uwsgi"), stk.HttpServer("bjoern"), stk.NginxCeiling()]
    assert [names(stk.round_order(live, r)) for r in range(4)] == [
        ["uwsgi-uwsgi", "bjoern", "nginx"],
        ["bjoern", "nginx", "uwsgi-uwsgi"],
        ["nginx", "uwsgi-uwsgi", "bjoern"],
        ["uwsgi-uwsgi", "bjoern", "nginx"],
    ]


def test_a_stack_and_its_twin_run_back_to_back_in_turn_first():
    kept = stk.WsgiFpm("fastcgi", keepconn=True)
    plain = stk.WsgiFpm("fastcgi")
    live = [stk.Uwsgi("uwsgi"), kept, kept.against(Path("/old/wsgi-fpm")),
            plain, plain.against(Path("/old/wsgi-fpm"))]
    k, p = "wsgi-fpm-fastcgi-keepconn", "wsgi-fpm-fastcgi"
    # Three units (a stack, two pairs): the start comes round every three
    # rounds, the order within the pairs every two.
    assert [names(stk.round_order(live, r)) for r in range(6)] == [
        ["uwsgi-uwsgi", k, k + "@against", p, p + "@against"],
        [k + "@against", k, p + "@against", p, "uwsgi-uwsgi"],
        [p, p + "@against", "uwsgi-uwsgi", k, k + "@against"],
        ["uwsgi-uwsgi", k + "@against", k, p + "@against", p],
        [k, k + "@against", p, p + "@against", "uwsgi-uwsgi"],
        [p + "@against", p, "uwsgi-uwsgi", k + "@against", k],
    ]


def test_a_stack_whose_twin_or_original_is_gone_runs_alone():
    kept = stk.WsgiFpm("fastcgi", keepconn=True)
    plain = stk.WsgiFpm("fastcgi")
    k, p = "wsgi-fpm-fastcgi-keepconn", "wsgi-fpm-fastcgi"
    # The keep_conn original failed to start: its twin is a unit of its own,
    # not the second half of the stack before it.
    live = [plain, plain.against(Path("/old")), kept.against(Path("/old"))]
    assert [names(stk.round_order(live, r)) for r in range(2)] == [
        [p, p + "@against", k + "@against"],
        [k + "@against", p + "@against", p],
    ]


def test_the_twin_runs_the_other_binary_under_a_name_and_label_of_its_own():
    kept = stk.WsgiFpm("fastcgi", keepconn=True)
    twin = kept.against(Path("/old/wsgi-fpm"))
    assert twin.binary_path() == Path("/old/wsgi-fpm")
    assert kept.binary_path() != twin.binary_path()
    assert (twin.name, twin.label) == (kept.name + "@against", kept.label + " (against)")
    assert twin.front_port not in (kept.front_port, kept.backend_port)


def test_ratios_pair_the_same_rounds_and_skip_a_round_without_a_figure():
    this = {"rounds": [{"round": 1, "rps": 110.0}, {"round": 2, "rps": 90.0},
                       {"round": 3, "rps": None}, {"round": 4, "rps": 120.0},
                       {"round": 5, "rps": 0}, {"round": 6, "rps": 200.0},
                       {"round": 7, "rps": 150.0}]}
    # The other build's round 4 answered nothing, and it has no round 6
    # (it died): rounds pair by number, not by position.
    other = {"rounds": [{"round": 1, "rps": 100.0}, {"round": 2, "rps": 100.0},
                        {"round": 3, "rps": 100.0}, {"round": 4, "rps": 0},
                        {"round": 5, "rps": 100.0}, {"round": 7, "rps": 50.0}]}
    got = stk.paired(this, other)
    assert got["ratios"] == [1.1, 0.9, 3.0]
    # The median, not the mean (1.667): one wild round does not move it.
    assert abs(got["median"] - 1.1) < 1e-9
    assert stk.paired({"rounds": []}, other) == {"ratios": [], "median": None}


def test_with_an_even_count_of_units_each_member_of_a_pair_is_first_after_the_reload_in_turn():
    kept = stk.WsgiFpm("fastcgi", keepconn=True)
    live = [stk.Uwsgi("uwsgi"), kept, kept.against(Path("/old"))]
    k = "wsgi-fpm-fastcgi-keepconn"
    # Two units: were the start and the order both to follow the round's
    # parity, the pair would start only in odd rounds, its twin first.
    firsts = [names(stk.round_order(live, r))[0] for r in range(4)]
    assert sorted(firsts) == sorted(["uwsgi-uwsgi", "uwsgi-uwsgi", k, k + "@against"])


def test_over_twice_as_many_rounds_as_units_every_unit_starts_once_in_each_order():
    def pair(s):
        return [s, s.against(Path("/old"))]
    pool = [pair(stk.WsgiFpm("fastcgi", keepconn=True)), [stk.Uwsgi("uwsgi")], pair(stk.WsgiFpm("scgi")),
            [stk.HttpServer("bjoern")], pair(stk.WsgiFpm("uwsgi"))]
    for n in range(1, len(pool) + 1):
        units = pool[:n]
        live = [s for u in units for s in u]
        orders = [names(stk.round_order(live, r)) for r in range(2 * n)]
        # Each unit starts a round twice, once in each order: a stack alone
        # is first twice, each member of a pair once.
        firsts = [o[0] for o in orders]
        for u in units:
            for s in u:
                assert firsts.count(s.name) == (2 if len(u) == 1 else 1), (n, orders)
        # And every round still runs each pair back to back, in turn first.
        for r, o in enumerate(orders):
            for u in units:
                if len(u) == 2:
                    at = o.index(u[0].name)
                    assert o[at + (-1 if r % 2 else 1)] == u[1].name, (n, r, o)


def test_ratios_leave_out_a_round_with_errors_on_either_side():
    this = {"rounds": [{"round": 1, "rps": 110.0, "errors": 0}, {"round": 2, "rps": 5000.0, "errors": 300},
                       {"round": 3, "rps": 90.0, "errors": 0}]}
    other = {"rounds": [{"round": 1, "rps": 100.0, "errors": 0}, {"round": 2, "rps": 100.0, "errors": 0},
                        {"round": 3, "rps": 4000.0, "errors": 12}]}
    assert stk.paired(this, other)["ratios"] == [1.1]


def test_a_round_whose_renewal_failed_is_named_once_for_all_its_stacks():
    why = "no new nginx worker within 10 s (the reload was refused?)"
    result = {
        "uwsgi-uwsgi": {"rounds": [{"round": 1, "rps": 9.0}, {"round": 2, "rps": 9.0, "renewal": why}]},
        "bjoern": {"rounds": [{"round": 2, "rps": 8.0, "renewal": why}, {"round": 1, "rps": 8.0}]},
        "granian": {"status": "failing", "reason": "exited"},
    }
    assert stk.renewal_notes(result) == ["round 2 ran on nginx's old upstream connections: " + why]
    assert stk.renewal_notes({"bjoern": {"rounds": [{"round": 1, "rps": 8.0}]}}) == []
    # Nor are such rounds paired.
    this = {"rounds": [{"round": 1, "rps": 110.0}, {"round": 2, "rps": 300.0, "renewal": why}]}
    other = {"rounds": [{"round": 1, "rps": 100.0}, {"round": 2, "rps": 100.0, "renewal": why}]}
    assert stk.paired(this, other)["ratios"] == [1.1]


BENCH_RUN = Path(__file__).resolve().parent.parent / "bench" / "run"


def run_bench(*args, env=None):
    import os
    import subprocess
    e = dict(os.environ)
    e.pop("WSGI_FPM_WORKER_MODULE", None)
    e.update(env or {})
    # Every case is refused while the arguments are parsed: nothing starts.
    return subprocess.run([sys.executable, str(BENCH_RUN), *args], capture_output=True, text=True,
                          env=e, timeout=60)


def other_build(tmp_path, module=True):
    binary = tmp_path / "wsgi-fpm"
    binary.write_text("#!/bin/sh\nexit 1\n")
    binary.chmod(0o755)
    if module:
        (tmp_path / "libwsgi_fpm_worker.so").write_bytes(b"")
    return binary


def test_against_refuses_what_would_not_compare_two_builds(tmp_path):
    binary = other_build(tmp_path)
    plain = tmp_path / "plain"
    plain.write_text("not a program")
    (tmp_path / "bare").mkdir()
    bare = other_build(tmp_path / "bare", module=False)
    cases = [
        (("--check", "--against", str(tmp_path)), None, "not an executable file"),
        (("--check", "--against", str(plain)), None, "not an executable file"),
        (("--check", "--against", str(bare)), None, "no libwsgi_fpm_worker.so beside it"),
        (("--check", "--against", str(binary)), {"WSGI_FPM_WORKER_MODULE": "/x.so"},
         "unset WSGI_FPM_WORKER_MODULE"),
        (("--against", str(binary), "--stacks", "uwsgi-uwsgi"), None, "choose at least one"),
    ]
    for args, env, message in cases:
        r = run_bench(*args, env=env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr, (args, r.stderr)


def test_renewal_replaces_the_front_worker_and_says_why_when_it_cannot(tmp_path):
    import os
    (tmp_path / "logs").mkdir()
    ctx = stk.Ctx(tmp_path, None, 1, 1, 4, dict(os.environ))
    # No backend is needed: nginx starts and reloads with its upstream down.
    front = stk.FrontEnd(ctx, [stk.HttpServer("bjoern")])
    try:
        workers = set(front.proc.pids()) - {front.proc.pid}
        assert workers
        assert front.renew_upstream_connections() is None
        renewed = set(front.proc.pids()) - {front.proc.pid}
        assert renewed and not renewed & workers
        # A configuration nginx refuses: the old worker keeps serving.
        conf = front.dir / "nginx.conf"
        good = conf.read_text()
        conf.write_text(good + "\nno_such_directive;\n")
        why = front.renew_upstream_connections(timeout=1.5)
        assert why and "started no new worker" in why, why
        assert set(front.proc.pids()) - {front.proc.pid} == renewed
        conf.write_text(good)
        front.proc.stop()
        why = front.renew_upstream_connections()
        assert why and "has exited" in why, why
    finally:
        front.stop()
