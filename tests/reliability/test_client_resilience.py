"""tinker_ref's resilience rules (tinker_ref/retry.py, flow.py, service_client.py), each proved
through both transports against the mock's fault injection (mock_server/faults.py).

The run: a custom-loss training run (tests/reliability/runs.py: pairwise loss, then optim_step,
two steps) with chunks of 2 datums, so each phase is two concurrent POSTs. A faulted run must end
exactly like a fault-free run of the same transport: the same weights and Adam state (the
server's digest) and the same executed ops, none twice. The long outage (120 s) is in
test_outage.py; comparisons with the official SDK on the same faults are in
test_resilience_vs_official_sdk.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

import tinker_ref
from mock_server.embedded import EmbeddedServer, serve
from mock_server.faults import FaultPlan
from tests.reliability.runs import BASE_MODEL, LORA_SEED, batch, train_steps
from tests.support.server_state import server_view
from tinker_ref import errors, types
from tinker_ref.retry import RetryConfig
from tinker_ref.service_client import ClientOptions

TRANSPORTS = ["http", "grpc"]
CHUNKED = {"fwdbwd_max_chunk_len": 2}  # 4 datums -> 2 POSTs per phase
STEPS = [batch(0), batch(1)]
KEY = "tml-resilience"
FINISH_ENDPOINTS = ("/finish", "/FinishSession")


def client_for(
    mock: EmbeddedServer, transport: str, options: ClientOptions | None = None
) -> tinker_ref.ServiceClient:
    address = mock.grpc_target if transport == "grpc" else mock.url
    return tinker_ref.ServiceClient(
        base_url=address, api_key=KEY, transport=transport, options=options
    )


def train(
    transport: str, plan: FaultPlan | None, options: ClientOptions | None = None
) -> dict[str, Any]:
    """The run over `transport` against a fresh mock with `plan`; the server's view of it."""
    with serve(grpc=True, seed=0, client_config_overrides=CHUNKED, fault_plan=plan) as mock:
        client = client_for(mock, transport, options)
        try:
            training = client.create_lora_training_client(
                base_model=BASE_MODEL, rank=4, seed=LORA_SEED
            ).result(timeout=120)
            train_steps(training, STEPS)
            view = server_view(mock, training.model_id)
            view["peak_fwdbwd_holders"] = client.flow.fwdbwd.peak_holders
            view["sample_backoffs"] = client.flow.sample_backoffs
        finally:
            client.close()
    return view


@pytest.fixture(scope="module")
def clean_runs() -> dict[str, dict[str, Any]]:
    return {transport: train(transport, None) for transport in TRANSPORTS}


def assert_same_end(faulted: dict[str, Any], clean: dict[str, Any]) -> None:
    assert faulted["digest"] == clean["digest"]  # weights and Adam moments, bit for bit
    assert faulted["executed"] == clean["executed"]  # no op ran twice, none was lost


def run_through_fault(
    transport: str, rule: dict[str, Any], clean_runs: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The run over `transport` with the one fault `rule`: it must end as the clean run did."""
    run = train(transport, FaultPlan.from_json({"rules": [rule]}))
    assert_same_end(run, clean_runs[transport])
    return run


def faulted(records: list[dict[str, Any]], what: str = "") -> list[dict[str, Any]]:
    return [r for r in records if what in r.get("extra", {}).get("fault", "-")]


@pytest.fixture
def retry_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="tinker_ref"):
        yield caplog


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_billing_pause_is_waited_out_and_the_run_ends_identically(
    transport: str, clean_runs: dict[str, dict[str, Any]], retry_log: pytest.LogCaptureFixture
) -> None:
    # Every request is answered 402 for 8 s, from the first optim_step on.
    outage = {"endpoint": "optim_step", "kind": "outage", "status": 402, "seconds": 8}
    run = run_through_fault(transport, outage, clean_runs)
    assert len(faulted(run["records"], "status 402")) >= 2  # the pause was tried again
    paused = [r for r in retry_log.records if "paused due to billing" in r.getMessage()]
    assert len(paused) == 1 and paused[0].levelno == logging.WARNING  # once a minute at most
    assert {r.retry_delay for r in retry_log.records if hasattr(r, "retry_delay")} <= {5.0}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retry_after_is_honoured_over_both_wires(
    transport: str, clean_runs: dict[str, dict[str, Any]], retry_log: pytest.LogCaptureFixture
) -> None:
    rule = {"endpoint": "optim_step", "kind": "status", "status": 503, "retry_after": 1.25}
    run_through_fault(transport, rule, clean_runs)
    delays = [r.retry_delay for r in retry_log.records if hasattr(r, "retry_delay")]
    assert delays == [1.25]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_polls_of_a_failing_server_back_off_instead_of_spinning(
    transport: str, clean_runs: dict[str, dict[str, Any]]
) -> None:
    # From the first poll on, every request is answered 503 for 12 s. That poll waits for the
    # model's creation, and nothing else is sent until it is there, so only that future's polls
    # (and a heartbeat) meet the outage. They back off at least 0.375, 0.75, 1.5, 3, 6 s (the
    # 0.5 s -> 10 s backoff less its jitter), so at most 6 polls fit in 12 s however fast the
    # machine; SDK 0.38 re-polls a 5xx at once (2180 polls in 12 s, measured).
    outage = {"endpoint": "retrieve_future", "kind": "outage", "status": 503, "seconds": 12}
    run = run_through_fault(transport, outage, clean_runs)
    polls = [r for r in faulted(run["records"], "outage") if "etrieve" in r["endpoint"]]
    assert 2 <= len(polls) <= 6


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_chunks_of_one_phase_are_sent_together_unless_their_bytes_exceed_the_budget(
    transport: str, clean_runs: dict[str, dict[str, Any]]
) -> None:
    # Chunks of 2 datums: 2 chunks per phase, the second sent first, then the first: 1 at once.
    assert clean_runs[transport]["peak_fwdbwd_holders"] == 1
    # Chunks of 1: chunks 2-4 of a phase go out together, then chunk 1 (the SDK's order) --
    # unless the byte budget is smaller than a chunk: then one at a time.
    with serve(grpc=True, seed=0, client_config_overrides={"fwdbwd_max_chunk_len": 1}) as mock:
        peaks, digests = [], []
        for capacity in (None, 1):
            client = client_for(mock, transport)
            try:
                training = client.create_lora_training_client(
                    base_model=BASE_MODEL, rank=4, seed=LORA_SEED
                ).result(timeout=60)
                if capacity is not None:
                    client.flow.fwdbwd.capacity = capacity
                train_steps(training, STEPS)
                peaks.append(client.flow.fwdbwd.peak_holders)
                digests.append(server_view(mock, training.model_id)["digest"])
            finally:
                client.close()
    assert peaks == [3, 1]
    assert digests[0] == digests[1]  # the order of arrival changes nothing on the server


@pytest.mark.timeout(60)
def test_the_services_forward_backward_byte_budget_is_adopted() -> None:
    overrides = {"fwdbwd_dispatch_bytes_semaphore_size": 1234}
    with serve(seed=0, client_config_overrides=overrides) as mock:
        client = client_for(mock, "http")
        try:
            client.get_server_capabilities()
            assert client.flow.fwdbwd.capacity == 1234
        finally:
            client.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sampling_backs_off_on_429_for_longer_than_eight_retries(transport: str) -> None:
    # tinker_ref used to give up after 8 retries; the SDK backs off for as long as it takes.
    rule = {"endpoint": "asample", "kind": "status", "status": 429, "times": 9}
    plan = FaultPlan.from_json({"rules": [rule]})
    with serve(grpc=True, seed=0, fault_plan=plan) as mock:
        client = client_for(mock, transport)
        try:
            sampler = client.create_sampling_client(base_model=BASE_MODEL)
            params = types.SamplingParams(max_tokens=4, temperature=1.0, seed=5)
            result = sampler.sample(types.ModelInput.from_ints([5, 6, 7]), 1, params).result(60)
            backoffs = client.flow.sample_backoffs
        finally:
            client.close()
        submits = [r for r in mock.service.records.records() if r.endpoint.endswith("ample")]
    assert len(result.sequences[0].tokens) == 4
    assert backoffs == 9
    assert [r.status for r in submits] == [429] * 9 + [200]
    assert submits[-1].seq_id == 0  # the same request was resubmitted, not a new one


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_sampling_clients_retry_config_governs_its_own_samples(transport: str) -> None:
    # SDK 0.38's create_sampling_client(retry_config=...): here tinker_ref's RetryConfig.
    rule = {"endpoint": "asample", "kind": "status", "status": 503, "times": 2}
    plan = FaultPlan.from_json({"rules": [rule]})
    prompt, params = types.ModelInput.from_ints([5, 6, 7]), types.SamplingParams(max_tokens=2)
    with serve(grpc=True, seed=0, fault_plan=plan) as mock:
        client = client_for(mock, transport)
        try:
            no_retries = client.create_sampling_client(
                base_model=BASE_MODEL, retry_config=RetryConfig(max_retries=0)
            )
            assert no_retries.retry_config == RetryConfig(max_retries=0)
            with pytest.raises(errors.InternalServerError):
                no_retries.sample(prompt, 1, params).result(60)
            default = client.create_sampling_client(base_model=BASE_MODEL)
            assert default.retry_config is None  # the ServiceClient's policy
            assert len(default.sample(prompt, 1, params).result(60).sequences) == 1
        finally:
            client.close()
        submits = [r for r in mock.service.records.records() if r.endpoint.endswith("ample")]
    assert [r.status for r in submits] == [503, 503, 200]


def _expire(mock: EmbeddedServer, session_id: str) -> None:
    """The service forgets the session for idleness (as if unheard of for two hours)."""

    def expire() -> None:
        mock.service.ctx.registry.sessions[session_id].last_seen -= 7200
        mock.service.reaper.sweep(force=True)

    mock.call(expire)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_session_the_service_ended_fails_waiting_and_later_requests_clearly(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The first forward_backward POST is held 6 s: the request is still waiting when the
    # session ends, and must not wait for the model that is gone.
    held = {"endpoint": "forward_backward", "kind": "delay", "seconds": 6}
    options = ClientOptions(heartbeat_seconds=0.2)
    plan = FaultPlan.from_json({"rules": [held]})
    with serve(grpc=True, seed=0, fault_plan=plan) as mock:
        client = client_for(mock, transport, options)
        try:
            training = client.create_lora_training_client(
                base_model=BASE_MODEL, rank=4, seed=LORA_SEED
            ).result(timeout=60)
            waiting = training.forward_backward(batch(0), "cross_entropy")
            session_id = training.model_id.split(":")[0]
            with caplog.at_level(logging.WARNING, logger="tinker_ref"):
                _expire(mock, session_id)
                with pytest.raises(errors.SessionGoneError) as raised:
                    waiting.result(timeout=30)
            assert raised.value.session_id == session_id
            assert "410" in str(raised.value) and "expired" in str(raised.value)
            assert client.session_error is not None
            with pytest.raises(errors.SessionGoneError):
                training.optim_step(types.AdamParams()).result(timeout=10)
            with pytest.raises(errors.SessionGoneError):
                client.create_sampling_client(base_model=BASE_MODEL)
        finally:
            client.close()
        finishes = [
            r for r in mock.service.records.records() if r.endpoint.endswith(FINISH_ENDPOINTS)
        ]
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("tinker_ref")]
    assert any(session_id in message and "410" in message for message in warnings)
    assert finishes == []  # an ended session is not finished again


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_failing_heartbeats_are_logged_and_their_recovery_too(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    # From the 3rd heartbeat on, the service answers 503 to everything for 3 s; the client is
    # idle meanwhile, so only heartbeats meet it. Failing for over 1 s is worth a warning.
    outage = {"endpoint": "session_heartbeat", "nth": 3, "kind": "outage", "seconds": 3}
    options = ClientOptions(heartbeat_seconds=0.1, heartbeat_warning_seconds=1.0)
    with serve(grpc=True, seed=0, fault_plan=FaultPlan.from_json({"rules": [outage]})) as mock:
        client = client_for(mock, transport, options)
        try:
            with caplog.at_level(logging.WARNING, logger="tinker_ref"):
                client.create_sampling_client(base_model=BASE_MODEL)
                answered_again = "heartbeats are answered again"
                while not any(answered_again in r.getMessage() for r in caplog.records):
                    time.sleep(0.05)
            assert client.session_error is None  # a failing heartbeat does not end a session
        finally:
            client.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "tinker_ref.service_client"]
    assert any("heartbeats have failed" in m and "503" in m for m in messages)
    assert messages[-1].endswith(answered_again)


def _finish_reasons(mock: EmbeddedServer) -> list[Any]:
    reasons = []
    for record in mock.service.records.records():
        if record.endpoint.endswith(FINISH_ENDPOINTS) and isinstance(record.body, dict):
            reason = record.body.get("reason")
            reasons.append(reason.get("type") if isinstance(reason, dict) else reason)
    return reasons


class _Interrupt(BaseException):
    """Stands in for KeyboardInterrupt (a BaseException that is not an Exception)."""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_leaving_a_with_block_reports_success_errored_or_interrupted(transport: str) -> None:
    with serve(grpc=True, seed=0) as mock:
        with client_for(mock, transport) as client:
            client.create_sampling_client(base_model=BASE_MODEL)
        with pytest.raises(ValueError), client_for(mock, transport) as client:
            client.create_sampling_client(base_model=BASE_MODEL)
            raise ValueError("the training script failed")
        with pytest.raises(_Interrupt), client_for(mock, transport) as client:
            client.create_sampling_client(base_model=BASE_MODEL)
            raise _Interrupt
        client = client_for(mock, transport)
        client.create_sampling_client(base_model=BASE_MODEL)
        client.close("errored", detail="diverged").result()
        assert _finish_reasons(mock) == ["success", "errored", "interrupted", "errored"]


@pytest.mark.timeout(60)
def test_close_reports_a_finish_the_service_could_not_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with serve(seed=0) as mock:
        client = client_for(mock, "http", ClientOptions(close_timeout=1.0))
        client.create_sampling_client(base_model=BASE_MODEL)
    with caplog.at_level(logging.WARNING, logger="tinker_ref"):
        finished = client.close()  # the service is gone: the finish cannot be recorded
    with pytest.raises(errors.APITimeoutError):
        finished.result()
    assert any("not recorded" in r.getMessage() for r in caplog.records)
