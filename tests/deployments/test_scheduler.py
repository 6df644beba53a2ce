"""The scheduler (apps/deployments/scheduler.py): a pure function, so every rule and every
refusal is checked here on plain rows, without a database or a Triton."""

from __future__ import annotations

import pytest

from apps.deployments.scheduler import Ask, Candidate, PlacementImpossible, place, refusal


def server(name: str, **kw) -> Candidate:
    return Candidate(id=int(name.rsplit("-", 1)[1]), name=name, state=kw.pop("state", "up"), **kw)


def names(chosen) -> list[str]:
    return [c.name for c in chosen]


def refused(ask: Ask, servers) -> PlacementImpossible:
    with pytest.raises(PlacementImpossible) as info:
        place(ask, servers)
    err = info.value
    assert (err.code, err.status_code) == ("placement_impossible", 409)
    assert err.as_dict()["reasons"] == err.reasons
    return err


class TestCandidates:
    def test_labels_must_all_be_on_the_server(self):
        servers = [
            server("triton-1", labels={"zone": "phi", "site": "beijing"}),
            server("triton-2", labels={"zone": "public", "site": "beijing"}),
            server("triton-3", labels={"zone": "phi"}),
        ]
        ask = Ask(count=1, labels={"zone": "phi", "site": "beijing"})

        assert names(place(ask, servers)) == ["triton-1"]
        assert refusal(ask, servers[1]) == "lacks label zone=phi"
        assert refusal(ask, servers[2]) == "lacks label site=beijing"

    def test_server_labels_beyond_those_asked_do_not_matter(self):
        assert names(place(Ask(count=1), [server("triton-1", labels={"zone": "phi"})])) == ["triton-1"]

    def test_accelerator_blank_is_any_else_must_match(self):
        servers = [
            server("triton-1", hardware="gpu"),
            server("triton-2", hardware="cpu"),
            server("triton-3", hardware="npu"),
        ]

        assert names(place(Ask(count=3), servers)) == ["triton-1", "triton-2", "triton-3"]
        assert names(place(Ask(count=1, accelerator="npu"), servers)) == ["triton-3"]
        assert refusal(Ask(count=1, accelerator="npu"), servers[0]) == "hardware gpu, needs npu"

    def test_backend_the_version_needs(self):
        servers = [server("triton-1", backends=("vllm",)), server("triton-2", backends=("python", "onnxruntime"))]

        assert names(place(Ask(count=1, backend="python"), servers)) == ["triton-2"]
        assert refusal(Ask(count=1, backend="python"), servers[0]) == "lacks backend python"

    def test_down_server_is_never_chosen_unknown_is(self):
        servers = [server("triton-1", state="down"), server("triton-2", state="unknown")]

        assert names(place(Ask(count=1), servers)) == ["triton-2"]
        assert refusal(Ask(count=1), servers[0]) == "DOWN"

    def test_a_server_holding_the_version_gets_no_second_replica(self):
        servers = [server("triton-1", holds_version=True), server("triton-2")]

        assert names(place(Ask(count=1), servers)) == ["triton-2"]
        assert refusal(Ask(count=1), servers[0]) == "already holds a replica of this version"


class TestMemory:
    def test_must_fit_when_both_are_declared(self):
        servers = [server("triton-1", memory_mb=8192, used_mb=6144), server("triton-2", memory_mb=8192, used_mb=4096)]

        assert names(place(Ask(count=1, memory_mb=4096), servers)) == ["triton-2"]
        assert refusal(Ask(count=1, memory_mb=4096), servers[0]) == "2048 MiB free, needs 4096"

    def test_exact_fit_fits(self):
        assert names(place(Ask(count=1, memory_mb=2048), [server("triton-1", memory_mb=4096, used_mb=2048)])) == [
            "triton-1"
        ]

    def test_undeclared_server_memory_or_undeclared_set_memory_is_not_checked(self):
        assert names(place(Ask(count=1, memory_mb=10**6), [server("triton-1", memory_mb=0)])) == ["triton-1"]
        assert names(place(Ask(count=1, memory_mb=0), [server("triton-1", memory_mb=1024, used_mb=4096)])) == [
            "triton-1"
        ]

    def test_overcommitted_server_reports_zero_free(self):
        assert refusal(Ask(count=1, memory_mb=1), server("triton-1", memory_mb=1024, used_mb=4096)) == (
            "0 MiB free, needs 1"
        )


class TestOrder:
    def test_spread_one_replica_per_server(self):
        chosen = place(Ask(count=3), [server(f"triton-{i}") for i in (1, 2, 3, 4)])

        assert len(set(names(chosen))) == 3

    def test_tightest_fit_first(self):
        servers = [
            server("triton-1", memory_mb=16384),  # 12 GiB left after
            server("triton-2", memory_mb=8192, used_mb=2048),  # 2 GiB left after
            server("triton-3", memory_mb=8192),  # 4 GiB left after
        ]

        assert names(place(Ask(count=2, memory_mb=4096), servers)) == ["triton-2", "triton-3"]

    def test_known_memory_before_unknown(self):
        servers = [server("triton-1", memory_mb=0), server("triton-2", memory_mb=65536)]

        assert names(place(Ask(count=1, memory_mb=1024), servers)) == ["triton-2"]

    def test_ties_by_fewest_replicas_then_name(self):
        servers = [
            server("triton-3", replicas=0),
            server("triton-1", replicas=2),
            server("triton-2", replicas=0),
        ]

        assert names(place(Ask(count=3), servers)) == ["triton-2", "triton-3", "triton-1"]

    def test_without_memory_estimate_fewest_replicas_first(self):
        servers = [server("triton-1", memory_mb=4096, replicas=3), server("triton-2", memory_mb=65536, replicas=1)]

        assert names(place(Ask(count=1), servers)) == ["triton-2"]


class TestRefusals:
    def test_not_enough_servers_names_every_one_and_why(self):
        servers = [
            server("triton-1", state="down"),
            server("triton-2", labels={"zone": "public"}),
            server("triton-3", labels={"zone": "phi"}, memory_mb=4096, used_mb=2048),
            server("triton-4", labels={"zone": "phi"}, memory_mb=8192),
        ]

        err = refused(Ask(count=2, labels={"zone": "phi"}, memory_mb=4096), servers)

        assert err.reasons == [
            "triton-1: DOWN",
            "triton-2: lacks label zone=phi",
            "triton-3: 2048 MiB free, needs 4096",
        ]
        assert "cannot place 2 replica(s): 1 server(s) fit" in err.detail
        for reason in err.reasons:
            assert reason in err.detail

    def test_no_server_at_all(self):
        err = refused(Ask(count=1), [])

        assert err.reasons == []
        assert "no inference server is registered" in err.detail

    def test_all_fit_but_too_few(self):
        err = refused(Ask(count=3), [server("triton-1"), server("triton-2")])

        assert err.reasons == []
        assert "2 server(s) fit" in err.detail

    def test_first_failing_rule_is_the_reason(self):
        down_and_unlabelled = server("triton-1", state="down", labels={})

        assert refusal(Ask(count=1, labels={"zone": "phi"}), down_and_unlabelled) == "DOWN"

    def test_every_missing_label_is_named(self):
        assert refusal(Ask(count=1, labels={"zone": "phi", "site": "x"}), server("triton-1")) == (
            "lacks label site=x, zone=phi"
        )
