"""The one-round-trip RPCs (RunForwardBackward, RunOptimStep): gRPC's answer on the submitting call.

The same ops through the same service path as ForwardBackward/OptimStep + RetrieveFuture, so:
the same bits (metrics and weights) on either path and on a server without them (the client
falls back); the same seq_id dedupe, across both RPCs; the same errors; and the client's records
show no RetrieveFuture for the ops it ran this way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from mock_server.embedded import EmbeddedServer, serve
from mock_server.grpc import SERVICE_NAME
from mock_server.grpc.server import generic_handler
from mock_server.testing import MockServer
from tests.support.training import datum, token_mean_nll
from tinker_ref import ServiceClient, codec, types
from tinker_ref._proto.tinker_ref.training.v1 import training_pb2 as pb
from tinker_ref._proto.tinker_ref.training.v1.training_pb2_grpc import TrainingServiceStub
from tinker_ref.futures import EventLoopThread
from tinker_ref.transport.grpc import GrpcTransport

MODEL = "tinker-ref/tiny-bytes"
ADAM = types.AdamParams(learning_rate=2e-2)
DATA = [datum(list(t)) for t in (b"the cat sat", b"on the mat", b"a dog ran")]
KEY = "tml-one-round-trip"

pytestmark = pytest.mark.tinker_mock(seed=0, grpc=True)


def records(mock: EmbeddedServer) -> list[Any]:
    return list(mock.call(lambda: mock.service.records.records()))


def train(target: str, one_round_trip: bool) -> tuple[list[Any], list[float], GrpcTransport]:
    """Two pipelined custom-loss steps and a forward probe; what the user sees of them."""
    with ServiceClient(base_url=target, api_key=KEY, transport="grpc") as service:
        transport = service.transport
        assert isinstance(transport, GrpcTransport)
        transport.one_round_trip = one_round_trip
        training = service.create_lora_training_client(MODEL, rank=4, seed=5)
        steps = []
        for _ in range(2):
            fb = training.forward_backward_custom(DATA, token_mean_nll)
            step = training.optim_step(ADAM)  # pipelined: before the custom loss resolves
            steps.append((fb.result(timeout=60).metrics, step.result(timeout=60).metrics))
        probe = training.forward(DATA[:1], "cross_entropy").result(timeout=60)
        return steps, list(probe.loss_fn_outputs[0]["logprobs"].tolist()), transport


class _WithoutRunRpcs(grpc.GenericRpcHandler):
    """The service as a server from before the Run* RPCs: they are UNIMPLEMENTED."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self.inner = inner

    def service(self, details: Any) -> grpc.RpcMethodHandler | None:
        if details.method.rsplit("/", 1)[1].startswith("Run"):
            return None
        return self.inner.service(details)


@pytest.fixture(scope="module")
def old_server(tinker_mock_module: MockServer) -> Iterator[str]:
    """A second gRPC front end over the same service, without the Run* RPCs."""
    mock = tinker_mock_module.embedded

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_WithoutRunRpcs(generic_handler(mock.service)),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), mock.loop).result(30)
    yield f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(server.stop(None), mock.loop).result(30)


@pytest.mark.spec("WIRE-22", "WIRE-23", "DET-1")
def test_one_round_trip_equals_submit_then_retrieve_bit_for_bit(
    tinker_mock_module: MockServer, old_server: str
) -> None:
    mock = tinker_mock_module.embedded
    before = len(records(mock))
    run_steps, run_probe, run_transport = train(mock.grpc_target, one_round_trip=True)
    middle = len(records(mock))
    old_steps, old_probe, _ = train(mock.grpc_target, one_round_trip=False)
    fallback_steps, fallback_probe, fallback = train(old_server, one_round_trip=True)
    assert run_steps == old_steps == fallback_steps
    assert run_probe == old_probe == fallback_probe
    assert run_steps[0] != run_steps[1]  # the steps trained: the second loss differs
    assert run_transport.one_round_trip and not fallback.one_round_trip  # fell back for good

    # The one-round-trip run: every forward/backward and optim_step on a Run* RPC (2 steps of
    # forward, backward, optim_step; then the probe), none of their futures polled.
    ran = records(mock)[before:middle]
    name = {r.request_id: r.endpoint.rsplit("/", 1)[1] for r in ran if r.request_id}
    ops = [n for n in name.values() if n.startswith("Run")]
    assert sorted(ops) == ["RunForwardBackward"] * 5 + ["RunOptimStep"] * 2
    assert not {"ForwardBackward", "OptimStep"} & set(name.values())
    polled = {r.request_id for r in ran if r.endpoint.endswith("/RetrieveFuture")}
    assert all(not name[rid].startswith("Run") for rid in polled)
    assert all(r.status == 200 for r in ran)
    # The other two runs submitted and polled (the comparison compared two paths).
    later = records(mock)[middle:]
    assert sum(r.endpoint.endswith("/ForwardBackward") for r in later) == 10
    assert not any(
        r.endpoint.rsplit("/", 1)[1].startswith("Run") and r.status == 200 for r in later
    )


@pytest.fixture(scope="module")
def channel(tinker_mock_module: MockServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(tinker_mock_module.embedded.grpc_target) as channel:
        yield channel


def new_model(channel: grpc.Channel, seed: int) -> str:
    stub = TrainingServiceStub(channel)
    meta = (("x-api-key", KEY),)
    session = stub.CreateSession(pb.CreateSessionRequest(), metadata=meta).session_id
    create = pb.CreateModelRequest(
        session_id=session,
        model_seq_id=0,
        base_model=MODEL,
        lora_config=pb.LoraConfig(rank=4, seed=seed),
    )
    handle = stub.CreateModel(create, metadata=meta)
    while True:
        answer = stub.RetrieveFuture(
            pb.RetrieveFutureRequest(request_id=handle.request_id), metadata=meta
        )
        if answer.WhichOneof("outcome") != "try_again":
            return str(answer.create_model.model_id)


def run(channel: grpc.Channel, method: str, request: Any) -> list[pb.RunUpdate]:
    """A Run* call with `request` (bytes: sent as they are): every message of its stream."""
    call = channel.unary_stream(
        f"/{SERVICE_NAME}/{method}",
        request_serializer=None if isinstance(request, bytes) else type(request).SerializeToString,
        response_deserializer=pb.RunUpdate.FromString,
    )
    return list(call(request, metadata=(("x-api-key", KEY),), timeout=30))


@pytest.mark.spec("WIRE-22", "SEQ-5")
def test_a_retried_seq_id_is_deduplicated_across_both_paths(channel: grpc.Channel) -> None:
    model_id = new_model(channel, seed=3)
    body = codec.encode_forward_backward_request(model_id, 1, DATA, "cross_entropy")
    first = run(channel, "RunForwardBackward", body)
    assert [u.WhichOneof("update") for u in first] == ["accepted", "outcome"]
    assert first[1].outcome.WhichOneof("outcome") == "forward_backward"
    # The retry (a lost answer, say) and the same op over the unary RPC: the same request id
    # and result, the op ran once.
    again = run(channel, "RunForwardBackward", body)
    assert again[0].accepted.request_id == first[0].accepted.request_id
    assert again[1].outcome == first[1].outcome
    raw = channel.unary_unary(
        f"/{SERVICE_NAME}/ForwardBackward",
        request_serializer=None,
        response_deserializer=pb.FutureHandle.FromString,
    )
    handle = raw(body, metadata=(("x-api-key", KEY),), timeout=30)
    assert handle.request_id == first[0].accepted.request_id

    # seq 3 before seq 2: accepted at once (buffered); its outcome comes once seq 2 has run.
    step3 = pb.OptimStepRequest(model_id=model_id, seq_id=3, adam_params=pb.AdamParams())
    step2 = codec.encode_forward_backward_request(model_id, 2, DATA, "cross_entropy")
    early = channel.unary_stream(
        f"/{SERVICE_NAME}/RunOptimStep",
        request_serializer=pb.OptimStepRequest.SerializeToString,
        response_deserializer=pb.RunUpdate.FromString,
    )(step3, metadata=(("x-api-key", KEY),), timeout=30)
    assert next(early).WhichOneof("update") == "accepted"
    backward = run(channel, "RunForwardBackward", step2)
    assert backward[1].outcome.WhichOneof("outcome") == "forward_backward"
    outcome = next(early).outcome
    assert outcome.WhichOneof("outcome") == "optim_step"
    # The same seq_id with a different op: 409, as over the unary RPC and HTTP.
    with pytest.raises(grpc.RpcError) as conflict:
        run(
            channel,
            "RunOptimStep",
            pb.OptimStepRequest(model_id=model_id, seq_id=2, adam_params=pb.AdamParams()),
        )
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]


@pytest.mark.spec("WIRE-22")
@pytest.mark.parametrize(
    "case",
    ["garbage", "unknown_model", "unknown_loss", "no_key"],
)
def test_errors_are_those_of_the_submit_rpcs(channel: grpc.Channel, case: str) -> None:
    model_id = new_model(channel, seed=4)
    key: str | None = KEY
    if case == "garbage":
        body = b"\xff\xff\xff"
    elif case == "unknown_model":
        body = codec.encode_forward_backward_request("nope", 1, DATA, "cross_entropy")
    elif case == "unknown_loss":
        body = codec.encode_forward_backward_request(model_id, 1, DATA, "no_such_loss")
    else:
        body = codec.encode_forward_backward_request(model_id, 1, DATA, "cross_entropy")
        key = None

    def failure(method: str, response: Any, streamed: bool) -> tuple[Any, ...]:
        make = channel.unary_stream if streamed else channel.unary_unary
        call = make(f"/{SERVICE_NAME}/{method}", None, response.FromString)
        with pytest.raises(grpc.RpcError) as raised:
            answer = call(body, metadata=(("x-api-key", key),) if key else (), timeout=30)
            list(answer) if streamed else answer
        error: Any = raised.value
        return error.code(), error.details(), sorted(dict(error.trailing_metadata()).items())

    # The unary RPC second: a rejection that consumed seq 1 is replayed to the same request.
    over_run = failure("RunForwardBackward", pb.RunUpdate, streamed=True)
    over_unary = failure("ForwardBackward", pb.FutureHandle, streamed=False)
    assert over_run == over_unary
    assert dict(over_run[2])["tinker-http-status"] in {"400", "401", "404", "422"}


@pytest.mark.spec("WIRE-22", "WIRE-23")
def test_an_op_that_outlasts_the_long_poll_is_polled_by_its_request_id() -> None:
    # seq 2 sent before seq 1 waits for it; the server's long poll (0.5 s) ends first, so the
    # stream answers try_again and the client polls RetrieveFuture for the op's outcome.
    with serve(grpc=True, seed=0, long_poll_seconds=0.5) as mock:
        channel = grpc.insecure_channel(mock.grpc_target)
        model_id = new_model(channel, seed=1)
        channel.close()
        loop = EventLoopThread()
        transport = GrpcTransport(mock.grpc_target, KEY)
        try:
            early = loop.run(transport.optim_step(model_id, 2, ADAM))
            waiting = loop.submit(early.result())
            time.sleep(1.5)  # past the long poll: the stream has answered try_again
            assert not waiting.done()
            backward = loop.run(
                transport.forward_backward(model_id, 1, DATA, "cross_entropy", None, False)
            )
            assert loop.run(backward.result()).metrics["loss:sum"] > 0
            assert waiting.result(timeout=30).metrics["optimizer_step:sum"] == 1.0
            polls = [
                r.request_id
                for r in records(mock)
                if r.endpoint.endswith("/RetrieveFuture") and r.status == 200
            ]
            assert early.request_id in polls  # polled after try_again
            assert backward.request_id not in polls  # answered on its stream
        finally:
            loop.run(transport.close())
            loop.close()
