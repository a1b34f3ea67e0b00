"""SamplingClient: sampling and prompt logprobs from a frozen snapshot (or a base model).

Sample requests are numbered from 0 per client (`seq_id`), as the official SDK numbers them; a
client rebuilt from a sampler handle joins the sampling session and numbers from
`client_counter * 10**9`, so its seq_ids never collide with the original client's.
A submission holds a dispatch slot and its prompt's estimated bytes (tinker_ref/flow.py); a 429
answer makes all sampling of the ServiceClient back off and the same request (same seq_id) is
submitted again, for as long as the service keeps answering 429, as the SDK does. A client made
with a `retry_config` (tinker_ref/retry.py's `RetryConfig`) submits and polls its samples under
a retry policy of its own with those knobs; without one, under its ServiceClient's.

Over HTTP every sampling option of SDK 0.38 travels (`topk_sample_logprobs`,
`target_prompt_logprobs`, `prompt_alt_tokens_k`, `prompt_logprobs_last_n`, and the client's
`record_stability_info`) in the body the SDK sends; the gRPC service carries prompt logprobs
and their top-k only, and refuses the rest with a ConfigurationError naming the option.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tinker_ref.errors import ConfigurationError, RateLimitError, TinkerRefError
from tinker_ref.flow import estimate_prompt_bytes
from tinker_ref.futures import APIFuture, ResolvedClientFuture
from tinker_ref.retry import RetryConfig, RetryPolicy
from tinker_ref.transport.base import Pending
from tinker_ref.types import ModelInput, SampleResponse, SamplingParams, TensorData
from tinker_ref.wire_ops import json_wire, sample_body

log = logging.getLogger(__name__)
QUEUE_STATE_LOG_INTERVAL = 60.0  # seconds between "sampling is paused" warnings
SEQ_IDS_PER_CLIENT = 1_000_000_000  # a joined client numbers from client_counter * this

if TYPE_CHECKING:
    from tinker_ref.service_client import ServiceClient


class SamplingClient(ResolvedClientFuture):
    """Samples and prompt logprobs from saved weights or a base model.

    Made by `ServiceClient.create_sampling_client`,
    `TrainingClient.save_weights_and_get_sampling_client`, `SamplingClient.create` or
    `SamplingClient.from_sampler_handle`, not constructed directly. The client is its own
    resolved future: `.result()` and `await` give it back.

    Args:
        service: The ServiceClient whose session the sampler belongs to.
        sampling_session_id: The sampling session's id.
        base_model: The base model's name.
    """

    def __init__(self, service: ServiceClient, sampling_session_id: str, base_model: str) -> None:
        self.service = service
        self.sampling_session_id = sampling_session_id
        self.base_model = base_model
        self._seq_ids = itertools.count()
        self._lock = threading.Lock()
        self.record_stability_info = False  # set by the factory that made the client
        self._retry: RetryPolicy | None = None  # from `retry_config`; None: the transport's
        self._last_queue_state_logged = 0.0

    @property
    def retry_config(self) -> RetryConfig | None:
        """The knobs of this client's own retry policy (None: its ServiceClient's policy).

        Setting it to anything but a RetryConfig or None raises ConfigurationError.
        """
        return self._retry.config if self._retry is not None else None

    @retry_config.setter
    def retry_config(self, config: RetryConfig | None) -> None:
        if config is None:
            self._retry = None
            return
        if not isinstance(config, RetryConfig):
            raise ConfigurationError(
                f"retry_config must be a tinker_ref.retry.RetryConfig, got {type(config).__name__}"
            )
        policy = RetryPolicy(config)
        # The service's billing pause limit, as the transport's policy adopts it (before the
        # client has contacted the service: the config's own limit).
        with contextlib.suppress(TinkerRefError):
            policy.configure(self.service.client_config.billing_exception_max_pause_duration_sec)
        self._retry = policy

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
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: TensorData | None = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: int | None = None,
    ) -> APIFuture[SampleResponse]:
        """Generate `num_samples` completions of `prompt`.

        Args:
            prompt: The prompt's tokens.
            num_samples: How many completions to generate.
            sampling_params: Max tokens, temperature, top-k/top-p, stop sequences and `seed`
                (a seed makes the samples repeatable).
            include_prompt_logprobs: Also return the logprob of each prompt token.
            topk_prompt_logprobs: Also return the top-k alternatives per prompt position.
            topk_sample_logprobs: Also return the top-k alternatives per sampled position.
            target_prompt_logprobs: int64 `[len(prompt) - 1, K]` token ids to score at each
                prompt position (-1: none).
            prompt_alt_tokens_k: Tokens to draw per prompt position.
            prompt_logprobs_last_n: Score only the last N prompt tokens (needs
                `include_prompt_logprobs`).

        Returns:
            APIFuture[SampleResponse]: The sequences (tokens, logprobs, stop reason) and the
            prompt logprobs asked for.

        Raises:
            ValueError: An option is malformed (checked before anything is sent).
            ConfigurationError: Over gRPC, an option the gRPC service does not carry.
            RuntimeError: From the future: the server ignored `prompt_alt_tokens_k` or
                `prompt_logprobs_last_n` (it predates them).

        Example:
            >>> params = types.SamplingParams(max_tokens=20, temperature=0.7, seed=1)
            >>> prompt = types.ModelInput.from_ints(tokenizer.encode("The capital of France is"))
            >>> response = sampler.sample(prompt, num_samples=4, sampling_params=params).result()
            >>> [sequence.tokens for sequence in response.sequences]
        """
        _check_sample_options(
            target_prompt_logprobs,
            prompt_alt_tokens_k,
            prompt_logprobs_last_n,
            include_prompt_logprobs,
        )
        seq_id = self._next_seq_id()
        extended = (
            topk_sample_logprobs != 0
            or target_prompt_logprobs is not None
            or prompt_alt_tokens_k != 0
            or prompt_logprobs_last_n is not None
            or self.record_stability_info
        )
        transport = self.service.transport
        wire = None
        if extended or hasattr(transport, "submit_sample"):
            wire = json_wire(transport, "this sampling option")
        body = sample_body(
            self.sampling_session_id,
            seq_id,
            prompt,
            num_samples,
            sampling_params,
            include_prompt_logprobs,
            topk_prompt_logprobs,
            topk_sample_logprobs,
            target_prompt_logprobs,
            prompt_alt_tokens_k,
            prompt_logprobs_last_n,
            self.record_stability_info,
        )

        async def submit() -> Pending[SampleResponse]:
            flow = self.service.flow
            size = estimate_prompt_bytes(prompt)
            async with flow.sample_dispatch(size):
                while True:
                    await flow.sample_backoff()
                    try:
                        if wire is None:  # gRPC: the options it carries
                            return await transport.sample(
                                self.sampling_session_id,
                                seq_id,
                                prompt,
                                num_samples,
                                sampling_params,
                                include_prompt_logprobs,
                                topk_prompt_logprobs,
                                retry=self._retry,
                            )
                        return await wire.submit_sample(body, retry=self._retry)
                    except RateLimitError:
                        flow.sample_rate_limited(size)

        async def run() -> SampleResponse:
            response = await (await submit()).result()
            _check_answered(response, prompt_alt_tokens_k, prompt_logprobs_last_n)
            return response

        return self.service.run_op(run())

    def compute_logprobs(
        self, prompt: ModelInput, prompt_logprobs_last_n: int | None = None
    ) -> APIFuture[list[float | None]]:
        """Compute log p(token_t | tokens before t) for every token of `prompt`.

        Args:
            prompt: The tokens to score.
            prompt_logprobs_last_n: Score only the last N tokens; None: all of them.

        Returns:
            APIFuture[list[float | None]]: One value per token; None for the first (and, with
            `prompt_logprobs_last_n`, for every token before the last N).

        Raises:
            ValueError: `prompt_logprobs_last_n` is below 1.
        """
        inner = self.sample(
            prompt,
            1,
            SamplingParams(max_tokens=1, temperature=1.0, top_k=-1, top_p=1.0),
            include_prompt_logprobs=True,
            prompt_logprobs_last_n=prompt_logprobs_last_n,
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
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: TensorData | None = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: int | None = None,
    ) -> SampleResponse:
        """Async version of `sample`.

        Returns:
            SampleResponse: The result itself (not a future), as in SDK 0.38.
        """
        return await self.sample(
            prompt,
            num_samples,
            sampling_params,
            include_prompt_logprobs,
            topk_prompt_logprobs,
            topk_sample_logprobs,
            target_prompt_logprobs,
            prompt_alt_tokens_k,
            prompt_logprobs_last_n,
        )

    async def compute_logprobs_async(
        self, prompt: ModelInput, prompt_logprobs_last_n: int | None = None
    ) -> list[float | None]:
        """Async version of `compute_logprobs`.

        Returns:
            list[float | None]: The logprobs themselves (not a future).
        """
        return await self.compute_logprobs(prompt, prompt_logprobs_last_n)

    def get_base_model(self) -> str:
        """Return the base model's name, known since the client was made (no request).

        Returns:
            str: The base model's name.
        """
        return self.base_model

    async def get_base_model_async(self) -> str:
        """Async version of `get_base_model`.

        Returns:
            str: The base model's name.
        """
        return self.base_model

    def get_tokenizer(self) -> Any:
        """Load the base model's tokenizer (tinker_ref/tokenizers.py).

        Returns:
            Any: The mock's built-in tokenizer for its test models, else the one
            `transformers.AutoTokenizer` loads.

        Raises:
            ImportError: The model needs `transformers` and it is not installed.
            RuntimeError: A Thinking Machines model, whose tokenizer tinker_ref cannot load.
        """
        from tinker_ref.tokenizers import load_tokenizer

        return load_tokenizer(self.base_model)

    def get_telemetry(self) -> None:
        """Return None: tinker_ref sends no telemetry."""
        return None

    # ----- handles and factories ----------------------------------------------------------

    def get_sampler_handle(self) -> str:
        """Return a string naming this sampler, for another process to sample from it too.

        `SamplingClient.from_sampler_handle(handle)` makes a client for the same sampler. The handle
        carries no credentials. Its format (base64 JSON) is tinker_ref's own: the SDK's handles are
        not interchangeable with it.

        Returns:
            str: The handle.
        """
        state = {
            "base_url": self.service.base_url,
            "transport": "grpc" if not hasattr(self.service.transport, "submit_sample") else "http",
            "sampling_session_id": self.sampling_session_id,
            "base_model": self.base_model,
            "record_stability_info": self.record_stability_info,
        }
        return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()

    @staticmethod
    def from_sampler_handle(handle: str, *, api_key: str | None = None) -> SamplingClient:
        """Create a client for the sampler behind a `get_sampler_handle()` handle.

        It authenticates with this process's credentials and joins the sampling session (HTTP
        only), numbering its samples from `client_counter * 10**9` so they never collide with the
        original client's. It has a ServiceClient of its own.

        Args:
            handle: The string `get_sampler_handle()` returned.
            api_key: The credential; default `$TINKER_API_KEY` (or `$TINKER_CREDENTIAL_CMD`).

        Returns:
            SamplingClient: The new client.

        Raises:
            ValueError: `handle` is not a tinker_ref sampler handle.
            ConfigurationError: No usable API key, or the handle's transport is gRPC.
        """
        from tinker_ref.service_client import ServiceClient

        try:
            state = json.loads(base64.urlsafe_b64decode(handle.encode()))
            base_url, sampler_id = str(state["base_url"]), str(state["sampling_session_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a tinker_ref sampler handle: {handle[:40]!r}") from exc
        service = ServiceClient(
            base_url=base_url, api_key=api_key, transport=str(state.get("transport", "http"))
        )
        wire = json_wire(service.transport, "SamplingClient.from_sampler_handle")

        async def join() -> int:
            await service._started()
            body = {"sampling_session_id": sampler_id, "type": "join_sampling_session"}
            answer = await wire.request_json("POST", "/join_sampling_session", body)
            return int(answer["client_counter"])

        counter = service.loop.run(join())
        client = SamplingClient(service, sampler_id, str(state.get("base_model", "")))
        client.record_stability_info = bool(state.get("record_stability_info", False))
        client._seq_ids = itertools.count(counter * SEQ_IDS_PER_CLIENT)
        return client

    @staticmethod
    def create(
        holder: ServiceClient,
        *,
        model_path: str | None = None,
        base_model: str | None = None,
        sampling_session_id: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> APIFuture[SamplingClient]:
        """Create a client for a checkpoint, a base model or an existing sampling session.

        Args:
            holder: The ServiceClient whose session the sampler belongs to.
            model_path: Saved sampler weights (`tinker://...`).
            base_model: A base model's name (with `sampling_session_id`: skips asking the
                service for it).
            sampling_session_id: An existing sampling session of `holder`'s session.
            retry_config: A retry policy of the client's own; None: `holder`'s.
            record_stability_info: Mark every sample for the `stable_reinforce` loss.

        Returns:
            APIFuture[SamplingClient]: The new client's future.
        """

        async def make() -> SamplingClient:
            if sampling_session_id is not None:
                name = base_model or await holder.transport.get_sampler_base_model(
                    sampling_session_id
                )
                client = SamplingClient(holder, sampling_session_id, name)
            else:
                client = await holder._create_sampling_client(model_path, base_model)
            client.record_stability_info = record_stability_info
            client.retry_config = retry_config
            return client

        return holder.run_op(make())

    def on_queue_state_change(self, queue_state: Any, queue_state_reason: str | None) -> None:
        """Warn (at most once a minute) that sampling is paused, as the SDK's observer does.

        tinker_ref's transports report no queue state, so only a caller invokes this.

        Args:
            queue_state: The new state ("active" or a paused state; an enum's `value` is read).
            queue_state_reason: Why it is paused, for the warning.
        """
        state = str(getattr(queue_state, "value", queue_state)).lower()
        if state == "active":
            return
        if time.time() - self._last_queue_state_logged < QUEUE_STATE_LOG_INTERVAL:
            return
        self._last_queue_state_logged = time.time()
        log.warning(
            "Sampling is paused for sampler %s. Reason: %s",
            self.sampling_session_id,
            queue_state_reason or state,
        )

    def __repr__(self) -> str:
        return f"SamplingClient({self.sampling_session_id!r}, base_model={self.base_model!r})"


def _check_sample_options(
    target_prompt_logprobs: TensorData | None,
    prompt_alt_tokens_k: int,
    prompt_logprobs_last_n: int | None,
    include_prompt_logprobs: bool,
) -> None:
    """ValueError for what the SDK refuses before sending (before any seq_id is used)."""
    if target_prompt_logprobs is not None:
        if target_prompt_logprobs.dtype != "int64":
            raise ValueError(
                "target_prompt_logprobs must be an int64 tensor of token ids, "
                f"got {target_prompt_logprobs.dtype}"
            )
        shape = target_prompt_logprobs.shape
        if shape is None or len(shape) != 2:
            raise ValueError(
                f"target_prompt_logprobs must be 2-D, [len(prompt) - 1, K], got shape {shape}"
            )
    if prompt_alt_tokens_k < 0:
        raise ValueError(f"prompt_alt_tokens_k must be 0 or greater, got {prompt_alt_tokens_k}")
    if prompt_logprobs_last_n is not None:
        if prompt_logprobs_last_n < 1:
            raise ValueError(
                f"prompt_logprobs_last_n must be 1 or greater, got {prompt_logprobs_last_n}"
            )
        if not include_prompt_logprobs:
            raise ValueError(
                "prompt_logprobs_last_n applies to prompt logprobs; set include_prompt_logprobs"
            )


def _check_answered(
    response: SampleResponse, prompt_alt_tokens_k: int, prompt_logprobs_last_n: int | None
) -> None:
    """RuntimeError when the server ignored an option (it predates it), as the SDK checks."""
    if prompt_alt_tokens_k > 0 and response.prompt_alt_tokens is None:
        raise RuntimeError(
            f"prompt_alt_tokens_k={prompt_alt_tokens_k} was requested but the server returned "
            "no prompt_alt_tokens; it may predate this feature"
        )
    values = response.prompt_logprobs_np
    if prompt_logprobs_last_n is not None and values is not None:
        excluded = np.asarray(values)[: max(len(values) - prompt_logprobs_last_n, 0)]
        if bool((~np.isnan(excluded)).any()):
            raise RuntimeError(
                f"prompt_logprobs_last_n={prompt_logprobs_last_n} was requested but the server "
                "returned prompt logprobs before that suffix; it may predate this feature"
            )
