"""Fault injection in the mock (mock_server/faults.py): scripted per case, route and request,
and off unless a plan is given explicitly."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conformance.servers import fault_plan
from mock_server.cli import build_parser, config_from_args
from mock_server.embedded import serve
from mock_server.faults import FaultInjector, FaultPlan, FaultPlanError, FaultRule
from mock_server.http import create_app
from mock_server.http.middleware import FAULTS_KEY
from mock_server.service import ServerConfig


def _post(url: str, body: Any, case: str) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "X-API-Key": "tml-faults",
            "X-Conformance-Case": case,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_a_rule_fires_on_the_nth_matching_request_of_its_case_only() -> None:
    rule = FaultRule(endpoint="optim_step", kind="status", case="a", nth=2, times=2)
    injector = FaultInjector(FaultPlan((rule,)))
    seen = [injector.match("a", "optim_step") for _ in range(4)]
    assert seen == [None, rule, rule, None]
    assert injector.match("b", "optim_step") is None  # another case counts on its own
    assert injector.match("a", "forward_backward") is None


def test_an_op_rule_fires_on_its_seq_id_whatever_the_endpoint_and_on_its_futures_polls() -> None:
    submit = FaultRule(endpoint=None, kind="status", case="a", seq_id=2)
    poll = FaultRule(endpoint=None, kind="pending", case="a", seq_id=3, target="retrieve")
    injector = FaultInjector(FaultPlan((submit, poll)))
    assert injector.match_op("a", 1, "submit") is None
    assert injector.match_op("a", 2, "submit") is submit  # /forward or /forward_backward alike
    assert injector.match_op("a", 2, "submit") is None  # the retry passes (times=1)
    assert injector.match_op("b", 2, "submit") is None  # another case's seq_id 2
    injector.note_submitted("a", "req-3", 3)
    assert injector.seq_of("a", "req-3") == 3 and injector.seq_of("b", "req-3") is None
    assert injector.match_op("a", 3, "retrieve") is poll
    assert injector.match_op("a", 3, "submit") is None  # its submit is not its poll
    assert injector.match("a", "forward_backward") is None  # endpoint rules are separate


def test_a_case_fault_on_a_step_becomes_a_rule_on_that_ops_seq_id() -> None:
    case = {
        "name": "c",
        "server": {"client_config": {"fwdbwd_max_chunk_len": 2}},
        "data": {"five": [{}] * 5, "one": [{}]},
        "steps": [
            {"id": "fb", "op": "forward_backward", "data": "one"},
            {"id": "custom", "op": "forward_backward_custom", "data": "five"},  # 3 + 3 chunks
            {"id": "step", "op": "optim_step"},
        ],
        "faults": [
            {"step": "custom", "phase": "backward", "chunk": 1, "kind": "status", "status": 503},
            {"step": "step", "request": "retrieve", "kind": "pending", "seconds": 1},
            {"endpoint": "create_model", "kind": "status", "status": 408},
        ],
    }
    rules = fault_plan([case]).rules  # type: ignore[union-attr]
    assert [(r.seq_id, r.target, r.endpoint) for r in rules] == [
        (6, "submit", None),  # seq 1 = fb; custom forward 2-4, backward 5-7: chunk 1 = 6
        (8, "retrieve", None),
        (None, "submit", "create_model"),
    ]


def test_a_plan_with_an_unknown_field_or_kind_is_refused() -> None:
    with pytest.raises(FaultPlanError, match="unknown field"):
        FaultPlan.from_json({"rules": [{"endpoint": "x", "kind": "status", "colour": 1}]})
    with pytest.raises(FaultPlanError, match="fault kind"):
        FaultPlan.from_json({"rules": [{"endpoint": "x", "kind": "explode"}]})
    with pytest.raises(FaultPlanError, match="retrieve_future"):
        FaultRule(endpoint="optim_step", kind="pending", seconds=1)
    with pytest.raises(FaultPlanError, match="retrieve_future"):
        FaultRule(endpoint=None, seq_id=1, kind="pending", seconds=1)  # a submit is no poll
    with pytest.raises(FaultPlanError, match="either an endpoint or"):
        FaultRule(endpoint="optim_step", seq_id=1, kind="status")


def test_a_status_fault_answers_429_with_retry_after_and_is_recorded() -> None:
    plan = FaultPlan(
        (FaultRule(endpoint="create_session", kind="status", case="c", status=429, retry_after=2),)
    )
    body = {"tags": [], "user_metadata": {}, "sdk_version": "0.38.0", "type": "create_session"}
    with serve(fault_plan=plan) as mock:
        status, headers, answer = _post(f"{mock.url}/api/v1/create_session", body, "c")
        again, _, created = _post(f"{mock.url}/api/v1/create_session", body, "c")
        records = mock.service.records.records("c")
    assert (status, headers["Retry-After"]) == (429, "2")
    assert "injected fault" in answer["detail"]
    assert again == 200 and created["session_id"]
    assert [r.extra.get("fault") for r in records] == ["status 429 Retry-After 2", None]


def test_only_an_explicit_plan_installs_the_injector() -> None:
    assert FAULTS_KEY not in create_app(ServerConfig(port=0))
    planned = create_app(ServerConfig(port=0, fault_plan=FaultPlan()))
    assert isinstance(planned[FAULTS_KEY], FaultInjector)


def test_the_cli_flag_loads_a_plan_and_refuses_a_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "plan.json"
    good.write_text(json.dumps({"rules": [{"endpoint": "optim_step", "kind": "drop_after_apply"}]}))
    args = build_parser().parse_args(["serve", "--port", "0", "--fault-plan", str(good)])
    config = config_from_args(args)
    assert config.fault_plan == FaultPlan((FaultRule("optim_step", "drop_after_apply"),))
    assert config_from_args(build_parser().parse_args(["serve"])).fault_plan is None
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--fault-plan", str(bad)])
