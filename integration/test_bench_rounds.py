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
