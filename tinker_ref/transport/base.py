"""What a transport must provide to the clients: the training API as async operations.

An operation that the service runs as a *future* is split in two, as on the wire: `submit`
(the POST that reserves the op's place in the model's queue; it returns once the service has
accepted the op) and `Pending.result()` (waiting for the outcome). The TrainingClient submits
ops strictly in seq_id order and waits for results concurrently, which is what lets an
`optim_step` be submitted before the custom-loss future it follows has resolved.

Every method raises only `tinker_ref.errors` exceptions. Each request is retried by the
transport under the one retry policy (tinker_ref/retry.py), with one exception: `sample`
lets a 429 through as RateLimitError, because sampling backs off client-wide
(tinker_ref/flow.py) and then resubmits the same request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from tinker_ref.retry import RetryPolicy
from tinker_ref.types import (
    AdamParams,
    Datum,
    ForwardBackwardOutput,
    LoraConfig,
    ModelInput,
    SampleResponse,
    SamplingParams,
)
from tinker_ref.types.responses import (
    GetInfoResponse,
    GetServerCapabilitiesResponse,
    LoadWeightsResponse,
    OptimStepResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
LossFnConfig = Mapping[str, float | str]


@dataclass(frozen=True)
class ClientConfig:
    """The service's client/config answer, with the official SDK's defaults."""

    fwdbwd_max_chunk_len: int = 1024
    fwdbwd_max_chunk_bytes_count: int = 5_000_000
    parallel_fwdbwd_chunks: bool = True
    proto_compress_fwdbwd: bool = False
    pjwt_auth_enabled: bool = False
    custom_loss_server_side: bool = False
    # Flow control (tinker_ref/flow.py) and the billing pause (tinker_ref/retry.py).
    fwdbwd_dispatch_bytes_semaphore_size: int = 50_000_000
    sample_dispatch_bytes_semaphore_size: int = 10 * 1024 * 1024
    inflight_response_bytes_semaphore_size: int = 50 * 1024 * 1024
    billing_exception_max_pause_duration_sec: int = 3600

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ClientConfig:
        defaults = cls()
        return cls(
            **{
                name: type(getattr(defaults, name))(body[name])
                for name in cls.__dataclass_fields__
                if body.get(name) is not None
            }
        )


class Pending(Protocol[T_co]):
    """An accepted operation whose result may not exist yet."""

    @property
    def request_id(self) -> str: ...

    async def result(self) -> T_co: ...


class DeferredResult(Generic[T]):
    """A Pending whose result is fetched by a transport-supplied coroutine function."""

    def __init__(self, request_id: str, fetch: Callable[[str], Awaitable[T]]) -> None:
        self._request_id, self._fetch = request_id, fetch

    @property
    def request_id(self) -> str:
        return self._request_id

    async def result(self) -> T:
        return await self._fetch(self._request_id)


class Transport(Protocol):
    async def start(self) -> ClientConfig: ...

    async def close(self) -> None: ...

    async def get_server_capabilities(self) -> GetServerCapabilitiesResponse: ...

    async def create_session(
        self, tags: Sequence[str], user_metadata: Mapping[str, str], project_id: str | None
    ) -> str: ...

    async def session_heartbeat(self, session_id: str) -> None: ...

    async def finish_session(self, session_id: str, reason: str, detail: str | None) -> None:
        """End the session; `reason` is "success", "errored" or "interrupted" (gRPC carries
        no `detail`)."""

    async def create_model(
        self,
        session_id: str,
        model_seq_id: int,
        base_model: str,
        lora: LoraConfig,
        user_metadata: Mapping[str, str] | None,
    ) -> Pending[str]: ...

    async def get_info(self, model_id: str) -> GetInfoResponse: ...

    async def forward_backward(
        self,
        model_id: str,
        seq_id: int,
        data: Sequence[Datum],
        loss_fn: str,
        loss_fn_config: LossFnConfig | None,
        forward_only: bool,
        custom_loss: float | None = None,
    ) -> Pending[ForwardBackwardOutput]:
        """Submit one forward/backward chunk. `custom_loss`: on the first backward chunk of a
        custom-loss call, that call's loss, which a transport may report to the server (HTTP:
        the `X-Tinker-Custom-Loss` header; it changes nothing the server computes)."""
        ...

    async def optim_step(
        self, model_id: str, seq_id: int, adam_params: AdamParams
    ) -> Pending[OptimStepResponse]: ...

    async def save_weights(
        self, model_id: str, seq_id: int, name: str, ttl_seconds: int | None
    ) -> Pending[SaveWeightsResponse]: ...

    async def save_weights_for_sampler(
        self,
        model_id: str,
        seq_id: int,
        name: str | None,
        sampling_session_seq_id: int | None,
        ttl_seconds: int | None,
    ) -> Pending[SaveWeightsForSamplerResponse]: ...

    async def load_weights(
        self, model_id: str, seq_id: int, path: str, optimizer: bool
    ) -> Pending[LoadWeightsResponse]: ...

    async def create_model_from_state(
        self,
        session_id: str,
        model_seq_id: int,
        path: str,
        optimizer: bool,
        user_metadata: Mapping[str, str] | None,
    ) -> Pending[LoadWeightsResponse]: ...

    async def create_sampling_session(
        self,
        session_id: str,
        sampling_session_seq_id: int,
        model_path: str | None,
        base_model: str | None,
    ) -> str: ...

    async def get_sampler_base_model(self, sampling_session_id: str) -> str: ...

    async def sample(
        self,
        sampling_session_id: str,
        seq_id: int,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool,
        topk_prompt_logprobs: int,
        *,
        retry: RetryPolicy | None = None,  # a SamplingClient's own policy (its retry_config)
    ) -> Pending[SampleResponse]: ...
