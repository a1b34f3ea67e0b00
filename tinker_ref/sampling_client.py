"""SamplingClient: sampling and prompt logprobs from a frozen snapshot (or a base model).

Sample requests are numbered from 0 per client (`seq_id`), as the official SDK numbers them.
A submission holds a dispatch slot and its prompt's estimated bytes (tinker_ref/flow.py); a 429
answer makes all sampling of the ServiceClient back off and the same request (same seq_id) is
submitted again, for as long as the service keeps answering 429, as the SDK does.
"""

from __future__ import annotations

import itertools
import math
import threading
from typing import TYPE_CHECKING

from tinker_ref.errors import RateLimitError
from tinker_ref.flow import estimate_prompt_bytes
from tinker_ref.futures import APIFuture, ResolvedClientFuture
from tinker_ref.transport.base import Pending
from tinker_ref.types import ModelInput, SampleResponse, SamplingParams

if TYPE_CHECKING:
    from tinker_ref.service_client import ServiceClient


class SamplingClient(ResolvedClientFuture):
    def __init__(self, service: ServiceClient, sampling_session_id: str, base_model: str) -> None:
        self.service = service
        self.sampling_session_id = sampling_session_id
        self.base_model = base_model
        self._seq_ids = itertools.count()
        self._lock = threading.Lock()

    def _next_seq_id(self) -> int:
        with self._lock:
            return next(self._seq_ids)

    def sample(
        self,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
    ) -> APIFuture[SampleResponse]:
        """`num_samples` completions of `prompt`; a `sampling_params.seed` makes them repeatable."""
        seq_id = self._next_seq_id()

        async def submit() -> Pending[SampleResponse]:
            flow = self.service.flow
            size = estimate_prompt_bytes(prompt)
            async with flow.sample_dispatch(size):
                while True:
                    await flow.sample_backoff()
                    try:
                        return await self.service.transport.sample(
                            self.sampling_session_id,
                            seq_id,
                            prompt,
                            num_samples,
                            sampling_params,
                            include_prompt_logprobs,
                            topk_prompt_logprobs,
                        )
                    except RateLimitError:
                        flow.sample_rate_limited(size)

        async def run() -> SampleResponse:
            return await (await submit()).result()

        return self.service.run_op(run())

    def compute_logprobs(self, prompt: ModelInput) -> APIFuture[list[float | None]]:
        """log p(token_t | tokens_<t) for every prompt token; None for the first."""
        inner = self.sample(
            prompt,
            1,
            SamplingParams(max_tokens=1, temperature=1.0, top_k=-1, top_p=1.0),
            include_prompt_logprobs=True,
        )

        async def run() -> list[float | None]:
            response = await inner
            values = response.prompt_logprobs or []
            return [None if v is None or math.isnan(v) else v for v in values]

        return self.service.run_op(run())

    # As in SDK 0.38, the async twins give the result itself.
    async def sample_async(
        self,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
    ) -> SampleResponse:
        return await self.sample(
            prompt, num_samples, sampling_params, include_prompt_logprobs, topk_prompt_logprobs
        )

    async def compute_logprobs_async(self, prompt: ModelInput) -> list[float | None]:
        return await self.compute_logprobs(prompt)

    async def get_base_model_async(self) -> str:
        return self.base_model

    def __repr__(self) -> str:
        return f"SamplingClient({self.sampling_session_id!r}, base_model={self.base_model!r})"
