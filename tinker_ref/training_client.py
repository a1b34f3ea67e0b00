"""TrainingClient: one LoRA model being trained, ops executed in seq_id order.

Every op reserves its request id synchronously, when the method is called; wire
`seq_id = request id + 1` (the model's creation is seq 0). Ops are *submitted* strictly in
that order (op k+1's POST waits until op k's POST was accepted; the chunks of one call are the
exception: they go out together, the first one last) while their results are awaited
concurrently, exactly as the official SDK does. Hence an `optim_step` called right after
`forward_backward_custom` gets a later id and runs after the custom loss's backward pass, even
though that pass is only sent once the forward results are back and the loss is computed.

A failure inside `forward_backward_custom` (the user's loss raised, say) leaves reserved ids
that can never be sent; the client is then *poisoned*: every waiting and later op raises
ClientPoisonedError naming the cause.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tinker_ref.chunking import chunk_data, estimate_datum_bytes
from tinker_ref.custom_loss import CustomLossFn, forward_phase_data, run_custom_loss
from tinker_ref.errors import ClientPoisonedError
from tinker_ref.futures import APIFuture, EventLoopThread, ResolvedClientFuture
from tinker_ref.loss_handle import LossHandle, check_loss_inputs, run_loss_handle
from tinker_ref.metrics import combine_chunk_results, merge_custom_loss_metrics
from tinker_ref.retry import RetryConfig
from tinker_ref.transport.base import ClientConfig, LossFnConfig, Pending, Transport
from tinker_ref.types import AdamParams, Datum, ForwardBackwardOutput, SaveWeightsExternalResponse
from tinker_ref.types.optimizer import DimuonParams, OptimParams
from tinker_ref.types.responses import (
    GetInfoResponse,
    LoadWeightsResponse,
    OptimStepResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
)
from tinker_ref.types.wire_names import SamplingClientKind
from tinker_ref.wire_ops import (
    custom_loss_config,
    json_wire,
    load_weights_body,
    optim_step_body,
    save_weights_body,
    save_weights_external_body,
    save_weights_for_sampler_body,
)

T = TypeVar("T")

if TYPE_CHECKING:
    from tinker_ref.sampling_client import SamplingClient
    from tinker_ref.service_client import ServiceClient


class TrainingClient(ResolvedClientFuture):
    """One LoRA model being trained; its ops run in the order they are called.

    Made by `ServiceClient.create_lora_training_client` (or `create_training_client_from_state*`),
    not constructed directly. Every op reserves its sequence number when called, so an
    `optim_step` called right after `forward_backward_custom` runs after that custom loss's
    backward pass. The client is its own resolved future: `.result()` and `await` give it back,
    as SDK 0.38's `TrainingClient` future does.

    Args:
        service: The ServiceClient whose session the model belongs to.
        model_id: The model's id (`<session_id>:train:<n>`).
        info: The model's `get_info` answer, fetched when the client was made.
    """

    def __init__(
        self,
        service: ServiceClient,
        model_id: str,
        info: GetInfoResponse,
    ) -> None:
        self.service = service
        self.model_id = model_id
        self._info = info
        self._id_lock = threading.Lock()
        self._next_request_id = 0
        self._turn = 0  # request ids below this one have been submitted (or skipped by a failure)
        self._turn_changed: asyncio.Condition | None = None
        self._error: BaseException | None = None

    @property
    def _loop(self) -> EventLoopThread:
        return self.service.loop

    @property
    def _transport(self) -> Transport:
        return self.service.transport

    @property
    def _config(self) -> ClientConfig:
        return self.service.client_config

    def get_info(self) -> GetInfoResponse:
        """Return the model's info (fetched once, when the client was created; no request).

        Returns:
            GetInfoResponse: The model id, base model name, tokenizer id, LoRA rank and optimizer.
        """
        return self._info

    # ----- ordering ---------------------------------------------------------------------------

    def _reserve(self, count: int) -> range:
        with self._id_lock:
            start = self._next_request_id
            self._next_request_id += count
            return range(start, start + count)

    @asynccontextmanager
    async def _turn_for(self, ids: range) -> AsyncIterator[None]:
        """Wait until every earlier id was submitted; then submit `ids`; then pass the turn."""
        if self._turn_changed is None:
            self._turn_changed = asyncio.Condition()
        condition = self._turn_changed
        async with condition:
            await condition.wait_for(lambda: self._turn >= ids.start or self._error is not None)
            if self._error is not None:
                raise ClientPoisonedError(
                    f"an earlier request of this TrainingClient failed ({self._error!r}); "
                    "it cannot accept further requests"
                ) from self._error
        try:
            yield
        finally:
            async with condition:
                self._turn = ids.stop
                condition.notify_all()

    async def _poison(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        if self._turn_changed is not None:
            async with self._turn_changed:
                self._turn_changed.notify_all()

    async def _submit_chunks(
        self,
        ids: range,
        chunks: Sequence[list[Datum]],
        loss_fn: str,
        loss_fn_config: LossFnConfig | None,
        forward_only: bool,
        custom_loss: float | None = None,
    ) -> list[Pending[ForwardBackwardOutput]]:
        """POST the chunks of one call with seq_ids ids+1, as the SDK sends them: with
        `parallel_fwdbwd_chunks`, chunks 2..n concurrently and then the first, so the server
        buffers the early arrivals and starts the whole batch once the first lands; otherwise
        one after another. Each POST holds its estimated bytes in the client's forward/backward
        byte budget while it is being sent (flow.py). `custom_loss`: the value of a custom
        loss whose backward these chunks are, reported to the server with the first chunk (the
        mock's status page shows it; `X-Tinker-Custom-Loss`, docs/offline-development.md)."""
        flow = self.service.flow

        async def submit(index: int) -> Pending[ForwardBackwardOutput]:
            async with flow.fwdbwd.hold(sum(map(estimate_datum_bytes, chunks[index]))):
                return await self._transport.forward_backward(
                    self.model_id,
                    ids[index] + 1,
                    chunks[index],
                    loss_fn,
                    loss_fn_config,
                    forward_only,
                    custom_loss if index == 0 else None,
                )

        pending: list[Pending[ForwardBackwardOutput]] = []
        async with self._turn_for(ids):
            if self._config.parallel_fwdbwd_chunks and len(chunks) > 1:
                rest = await _gather_all(submit(i) for i in range(1, len(chunks)))
                pending = [await submit(0), *rest]
            else:
                for index in range(len(chunks)):
                    pending.append(await submit(index))
        return pending

    async def _gather(
        self, pending: Sequence[Pending[ForwardBackwardOutput]]
    ) -> ForwardBackwardOutput:
        results = await asyncio.gather(*(p.result() for p in pending))
        return combine_chunk_results(results)

    def _chunks(self, data: Sequence[Datum]) -> list[list[Datum]]:
        chunks = chunk_data(
            data, self._config.fwdbwd_max_chunk_len, self._config.fwdbwd_max_chunk_bytes_count
        )
        if not chunks:
            raise ValueError("no data provided")
        return chunks

    # ----- forward / backward -----------------------------------------------------------------

    def forward(
        self,
        data: Sequence[Datum],
        loss_fn: str,
        loss_fn_config: LossFnConfig | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Compute logprobs and the loss without gradients (nothing is accumulated).

        Args:
            data: The datums; split into chunks as the service's limits require.
            loss_fn: A built-in loss name, e.g. "cross_entropy".
            loss_fn_config: Options of that loss (e.g. PPO's clip thresholds), if any.

        Returns:
            APIFuture[ForwardBackwardOutput]: Per-datum `loss_fn_outputs` (logprobs) and metrics.

        Raises:
            ValueError: `data` is empty.
            ClientPoisonedError: From the future, if an earlier op of this client failed.
        """
        return self._forward_backward(data, loss_fn, loss_fn_config, forward_only=True)

    def forward_backward(
        self,
        data: Sequence[Datum],
        loss_fn: str,
        loss_fn_config: LossFnConfig | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Run a built-in loss forward and backward; the gradient accumulates until `optim_step`.

        Args:
            data: The datums; split into chunks as the service's limits require.
            loss_fn: A built-in loss name, e.g. "cross_entropy" or "importance_sampling".
            loss_fn_config: Options of that loss, if any.

        Returns:
            APIFuture[ForwardBackwardOutput]: Per-datum `loss_fn_outputs` and the summed metrics.

        Raises:
            ValueError: `data` is empty.
            ClientPoisonedError: From the future, if an earlier op of this client failed.
        """
        return self._forward_backward(data, loss_fn, loss_fn_config, forward_only=False)

    def _forward_backward(
        self,
        data: Sequence[Datum],
        loss_fn: str,
        loss_fn_config: LossFnConfig | None,
        forward_only: bool,
    ) -> APIFuture[ForwardBackwardOutput]:
        chunks = self._chunks(data)
        ids = self._reserve(len(chunks))

        async def run() -> ForwardBackwardOutput:
            pending = await self._submit_chunks(ids, chunks, loss_fn, loss_fn_config, forward_only)
            return await self._gather(pending)

        return self.service.run_op(run())

    def forward_backward_custom(
        self,
        data: Sequence[Datum],
        loss_fn: CustomLossFn | LossHandle,
        *,
        loss_type_input: Literal["logprobs"] | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Train on any differentiable function of the per-datum logprobs.

        A callable `loss_fn(data, logprobs_list) -> (loss, metrics)` gets one logprob tensor per
        datum, shaped like its `target_tokens`, and returns a scalar tensor and a dict of numbers.
        The client runs a forward pass, computes the loss and its gradient locally, and sends the
        gradient back as a weighted backward pass (two passes, one call). A `LossHandle` from
        `ServiceClient.create_custom_loss` that was uploaded (it has a `loss_id`) runs on the server
        in one `forward_backward` with loss "custom"; any other handle runs client-side.

        Args:
            data: The datums; each needs `loss_fn_inputs["target_tokens"]`.
            loss_fn: The loss: a callable as above, or a LossHandle of this session.
            loss_type_input: Deprecated in SDK 0.38 (warns); only "logprobs" is accepted.

        Returns:
            APIFuture[ForwardBackwardOutput]: The backward pass's outputs; its metrics are the
            server's plus the loss's own, with `loss:sum` the custom loss.

        Raises:
            ValueError: `data` is empty, `loss_type_input` is not "logprobs", or the LossHandle
                belongs to another session or its inputs are missing from a datum.
            CustomLossError: From the future, if the loss returned something unusable.
            ClientPoisonedError: From the future, if an earlier op of this client failed. A failure
                here (the loss raised, say) poisons the client for every later op.

        Example:
            >>> def mean_nll(data, logprobs):
            ...     all_logprobs = torch.cat(logprobs)
            ...     return -all_logprobs.mean(), {"tokens": float(all_logprobs.numel())}
            >>> result = training.forward_backward_custom(data, mean_nll).result()
            >>> result.metrics["loss:sum"]
        """
        if loss_type_input is not None:
            warnings.warn(
                "The 'loss_type_input' parameter of forward_backward_custom() is deprecated: "
                "the loss always receives logprobs.",
                DeprecationWarning,
                stacklevel=2,
            )
            if loss_type_input != "logprobs":
                raise ValueError(
                    f"Unsupported loss_type_input={loss_type_input!r}. Supported values are: "
                    "logprobs"
                )
        if isinstance(loss_fn, LossHandle):
            handle = loss_fn
            if handle.session_id != self.service._session_id:
                raise ValueError(
                    f"LossHandle {handle.name!r} was created in session {handle.session_id}; it "
                    "can only be used by clients of that session"
                )
            check_loss_inputs(handle, data)
            if handle.loss_id is not None:
                return self.forward_backward(data, "custom", custom_loss_config(handle.loss_id))
            return self._forward_backward_custom(data, lambda d, lp: run_loss_handle(handle, d, lp))
        return self._forward_backward_custom(data, loss_fn)

    def _forward_backward_custom(
        self, data: Sequence[Datum], loss_fn: CustomLossFn
    ) -> APIFuture[ForwardBackwardOutput]:
        """Train on any differentiable function of the per-datum logprobs.

        `loss_fn(data, logprobs_list) -> (loss, metrics)` gets one logprob tensor per datum,
        shaped like its `target_tokens`, in input order, and must return a scalar tensor. The
        result's metrics are the backward pass's server metrics plus the user's metrics (keys
        stringified, values Python numbers), with `loss:sum` = the custom loss and
        `surrogate_loss:sum` = the server's cross-entropy surrogate.
        """
        user_data = list(data)
        chunks = self._chunks(forward_phase_data(user_data))
        ids = self._reserve(2 * len(chunks))
        forward_ids, backward_ids = ids[: len(chunks)], ids[len(chunks) :]

        async def run() -> ForwardBackwardOutput:
            try:
                pending = await self._submit_chunks(
                    forward_ids, chunks, "cross_entropy", None, forward_only=True
                )
                forward = await self._gather(pending)
                # The user's loss may be slow: keep the event loop (other ops' I/O) free.
                custom = await asyncio.to_thread(
                    run_custom_loss, user_data, forward.loss_fn_outputs, loss_fn
                )
                backward_chunks, start = [], 0
                for chunk in chunks:  # the forward chunk boundaries: no gaps in reserved ids
                    backward_chunks.append(custom.backward_data[start : start + len(chunk)])
                    start += len(chunk)
                pending = await self._submit_chunks(
                    backward_ids,
                    backward_chunks,
                    "cross_entropy",
                    None,
                    forward_only=False,
                    custom_loss=float(custom.loss),
                )
                backward = await self._gather(pending)
            except BaseException as exc:
                await self._poison(exc)
                raise
            return ForwardBackwardOutput(
                loss_fn_output_type=backward.loss_fn_output_type,
                loss_fn_outputs=backward.loss_fn_outputs,
                metrics=merge_custom_loss_metrics(backward.metrics, custom.loss, custom.metrics),
            )

        return self.service.run_op(run())

    # ----- single-id ops ----------------------------------------------------------------------

    def _single(self, submit: Any) -> APIFuture[Any]:
        ids = self._reserve(1)

        async def run() -> Any:
            async with self._turn_for(ids):
                pending = await submit(ids.start + 1)
            return await pending.result()

        return self.service.run_op(run())

    def optim_step(
        self,
        optim_params: OptimParams | None = None,
        *,
        adam_params: AdamParams | None = None,
    ) -> APIFuture[OptimStepResponse]:
        """Apply the model's optimizer to the accumulated gradient, then clear it.

        Args:
            optim_params: The step's parameters, matching the optimizer chosen at creation:
                AdamParams (AdamW, the default) or DimuonParams. None: `AdamParams()`.
            adam_params: SDK 0.38's legacy keyword for AdamParams.

        Returns:
            APIFuture[OptimStepResponse]: The step's metrics.

        Raises:
            ValueError: Both `optim_params` and `adam_params` were given.
            TypeError: `optim_params` is neither AdamParams nor DimuonParams.
            ConfigurationError: DimuonParams over the gRPC transport (HTTP only).

        Example:
            >>> training.forward_backward_custom(data, loss_fn)
            >>> training.optim_step(types.AdamParams(learning_rate=1e-4)).result()
        """
        if optim_params is not None and adam_params is not None:
            raise ValueError("Specify optim_params or legacy adam_params, not both")
        params = optim_params if optim_params is not None else adam_params
        if params is None:
            params = AdamParams()  # tinker_ref's default; the SDK requires parameters
        if isinstance(params, AdamParams):
            adam = params
            return self._single(lambda seq: self._transport.optim_step(self.model_id, seq, adam))
        if not isinstance(params, DimuonParams):
            raise TypeError("Expected AdamParams or DimuonParams")
        wire = json_wire(self._transport, "optim_step with DimuonParams")
        other = params
        return self._single(
            lambda seq: wire.submit_json_op(
                "/optim_step",
                optim_step_body(self.model_id, seq, other),
                "OptimStep",
                OptimStepResponse.from_json,
            )
        )

    def save_state(
        self,
        name: str,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
        user_metadata: dict[str, str] | None = None,
    ) -> APIFuture[SaveWeightsResponse]:
        """Save the weights and optimizer state as `tinker://<model_id>/weights/<name>`.

        Args:
            name: The checkpoint's name.
            ttl_seconds: Seconds until the checkpoint expires; None: it never does.
            overwrite: Replace an existing checkpoint of that name (and its metadata).
            user_metadata: Kept with the checkpoint; RestClient reads it back.

        Returns:
            APIFuture[SaveWeightsResponse]: Its `path` is the checkpoint's tinker path.

        Raises:
            ConfigurationError: `overwrite` or `user_metadata` over the gRPC transport (HTTP only).

        Example:
            >>> path = training.save_state("step-10").result().path
            >>> training.load_state_with_optimizer(path).result()
        """
        if not overwrite and user_metadata is None:
            return self._single(
                lambda seq: self._transport.save_weights(self.model_id, seq, name, ttl_seconds)
            )
        wire = json_wire(self._transport, "save_state with overwrite or user_metadata")
        return self._single(
            lambda seq: wire.submit_json_op(
                "/save_weights",
                save_weights_body(self.model_id, seq, name, ttl_seconds, overwrite, user_metadata),
                "SaveWeights",
                SaveWeightsResponse.from_json,
            )
        )

    def load_state(
        self, path: str, weights_access_token: str | None = None
    ) -> APIFuture[LoadWeightsResponse]:
        """Load the weights of a checkpoint into this model; the optimizer state starts fresh.

        Args:
            path: The checkpoint's tinker path (`tinker://<model_id>/weights/<name>`).
            weights_access_token: A token for another owner's checkpoint (HTTP only).

        Returns:
            APIFuture[LoadWeightsResponse]: The loaded path and model id.

        Raises:
            ConfigurationError: `weights_access_token` over the gRPC transport.

        Example:
            >>> path = training.save_state("step-10").result().path
            >>> training.load_state(path).result()
        """
        return self._load(path, False, weights_access_token)

    def load_state_with_optimizer(
        self, path: str, weights_access_token: str | None = None
    ) -> APIFuture[LoadWeightsResponse]:
        """Like `load_state`, but the Adam state is loaded too, so the run continues exactly.

        Args:
            path: A checkpoint `save_state` wrote, by its `tinker://` path.
            weights_access_token: Lets this model read a checkpoint another owner shared.

        Returns:
            APIFuture[LoadWeightsResponse]: Once loaded: the path and the model id.

        Raises:
            ConfigurationError: A `weights_access_token` over gRPC, which does not carry it.
        """
        return self._load(path, True, weights_access_token)

    def _load(
        self, path: str, optimizer: bool, weights_access_token: str | None
    ) -> APIFuture[LoadWeightsResponse]:
        if weights_access_token is None:
            return self._single(
                lambda seq: self._transport.load_weights(self.model_id, seq, path, optimizer)
            )
        wire = json_wire(self._transport, "load_state with weights_access_token")
        return self._single(
            lambda seq: wire.submit_json_op(
                "/load_weights",
                load_weights_body(self.model_id, seq, path, optimizer, weights_access_token),
                "LoadWeights",
                LoadWeightsResponse.from_json,
            )
        )

    def save_weights_for_sampler(
        self,
        name: str,
        ttl_seconds: int | None = None,
        user_metadata: dict[str, str] | None = None,
    ) -> APIFuture[SaveWeightsForSamplerResponse]:
        """Save the weights for sampling as `tinker://<model_id>/sampler_weights/<name>`.

        Args:
            name: The saved weights' name.
            ttl_seconds: Seconds until they expire; None: they never do.
            user_metadata: Kept with the checkpoint (HTTP only).

        Returns:
            APIFuture[SaveWeightsForSamplerResponse]: Its `path` is what
            `ServiceClient.create_sampling_client(model_path=...)` takes.

        Raises:
            ConfigurationError: `user_metadata` over the gRPC transport.
        """
        if user_metadata is None:
            return self._single(
                lambda seq: self._transport.save_weights_for_sampler(
                    self.model_id, seq, name, None, ttl_seconds
                )
            )
        wire = json_wire(self._transport, "save_weights_for_sampler with user_metadata")
        return self._single(
            lambda seq: wire.submit_json_op(
                "/save_weights_for_sampler",
                save_weights_for_sampler_body(
                    self.model_id, seq, name, None, None, ttl_seconds, user_metadata
                ),
                "SaveWeightsForSampler",
                SaveWeightsForSamplerResponse.from_json,
            )
        )

    def save_weights_and_get_sampling_client(
        self,
        name: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
        kind: SamplingClientKind = "snapshot",
    ) -> SamplingClient:
        """Save the current weights and return a client that samples from them.

        Args:
            name: Deprecated in SDK 0.38 and ignored (warns); use `save_weights_for_sampler` for
                a named checkpoint.
            retry_config: A retry policy of the sampling client's own (tinker_ref/retry.py);
                None: the ServiceClient's.
            record_stability_info: Mark every sample for the `stable_reinforce` loss.
            kind: "snapshot" freezes the weights; "inflight" publishes them to weights shared by
                this model's inflight samplers (each later inflight save updates them too).

        Returns:
            SamplingClient: A client for the saved weights (blocks until they are saved).

        Raises:
            ValueError: `kind` is neither "snapshot" nor "inflight".
            ConfigurationError: `kind="inflight"` over the gRPC transport.
        """
        if name is not None:
            warnings.warn(
                "The 'name' parameter of save_weights_and_get_sampling_client() is deprecated "
                "and has no effect; use save_weights_for_sampler(name=...) and "
                "create_sampling_client(model_path=...) for a persistent checkpoint.",
                DeprecationWarning,
                stacklevel=2,
            )
        return self.service._run(
            self._save_weights_and_get_sampling_client(retry_config, record_stability_info, kind)
        )

    async def save_weights_and_get_sampling_client_async(
        self,
        name: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
        kind: SamplingClientKind = "snapshot",
    ) -> SamplingClient:
        """Async version of `save_weights_and_get_sampling_client`.

        Returns:
            SamplingClient: The client itself, once the weights are saved.
        """
        return await self.service.run_op(
            self._save_weights_and_get_sampling_client(retry_config, record_stability_info, kind)
        )

    async def _save_weights_and_get_sampling_client(
        self, retry_config: RetryConfig | None, record_stability_info: bool, kind: str
    ) -> SamplingClient:
        from tinker_ref.sampling_client import SamplingClient

        if kind not in ("snapshot", "inflight"):
            raise ValueError(f"kind must be 'snapshot' or 'inflight', got {kind!r}")
        sampling_seq_id = self.service.next_sampling_session_seq_id()
        ids = self._reserve(1)

        async def submit(seq_id: int) -> Pending[SaveWeightsForSamplerResponse]:
            if kind == "snapshot":
                return await self._transport.save_weights_for_sampler(
                    self.model_id, seq_id, None, sampling_seq_id, None
                )
            wire = json_wire(self._transport, "save_weights_and_get_sampling_client(inflight)")
            return await wire.submit_json_op(
                "/save_weights_for_sampler",
                save_weights_for_sampler_body(
                    self.model_id, seq_id, None, sampling_seq_id, kind, None, None
                ),
                "SaveWeightsForSampler",
                SaveWeightsForSamplerResponse.from_json,
            )

        async with self._turn_for(ids):
            pending = await submit(ids.start + 1)
        response = await pending.result()
        if response.sampling_session_id is None:
            raise ValueError("the service returned no sampling_session_id for the snapshot")
        base_model = self._info.model_data.model_name or self._info.model_name or ""
        sampler = SamplingClient(self.service, response.sampling_session_id, base_model)
        sampler.record_stability_info = record_stability_info
        sampler.retry_config = retry_config
        return sampler

    # ----- async twins ------------------------------------------------------------------------
    # As in SDK 0.38: `await x_async(...)` submits the op (in the same seq_id order as the sync
    # call would) and gives its future; await that future for the result.

    async def get_info_async(self) -> GetInfoResponse:
        """Async version of `get_info`.

        Returns:
            GetInfoResponse: The model's info (no request).
        """
        return self._info

    async def forward_async(
        self, data: Sequence[Datum], loss_fn: str, loss_fn_config: LossFnConfig | None = None
    ) -> APIFuture[ForwardBackwardOutput]:
        """Async version of `forward`.

        Returns:
            APIFuture[ForwardBackwardOutput]: The op's future, once submitted (in the same
            order as the sync call); await it for the result.
        """
        return self.forward(data, loss_fn, loss_fn_config)

    async def forward_backward_async(
        self, data: Sequence[Datum], loss_fn: str, loss_fn_config: LossFnConfig | None = None
    ) -> APIFuture[ForwardBackwardOutput]:
        """Async version of `forward_backward`.

        Returns:
            APIFuture[ForwardBackwardOutput]: The op's future, once submitted (in the same
            order as the sync call); await it for the result.
        """
        return self.forward_backward(data, loss_fn, loss_fn_config)

    async def forward_backward_custom_async(
        self,
        data: Sequence[Datum],
        loss_fn: CustomLossFn | LossHandle,
        *,
        loss_type_input: Literal["logprobs"] | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Async version of `forward_backward_custom`.

        Returns:
            APIFuture[ForwardBackwardOutput]: The op's future, once submitted (in the same
            order as the sync call); await it for the result.
        """
        return self.forward_backward_custom(data, loss_fn, loss_type_input=loss_type_input)

    async def optim_step_async(
        self,
        optim_params: OptimParams | None = None,
        *,
        adam_params: AdamParams | None = None,
    ) -> APIFuture[OptimStepResponse]:
        """Async version of `optim_step`.

        Returns:
            APIFuture[OptimStepResponse]: The op's future, once submitted (in the same
            order as the sync call); await it for the result.
        """
        return self.optim_step(optim_params, adam_params=adam_params)

    async def save_state_async(
        self,
        name: str,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
        user_metadata: dict[str, str] | None = None,
    ) -> APIFuture[SaveWeightsResponse]:
        """Async version of `save_state`.

        Returns:
            APIFuture[SaveWeightsResponse]: The op's future, once submitted (in the same
            order as the sync call); await it for the result.
        """
        return self.save_state(name, ttl_seconds, overwrite, user_metadata)

    async def load_state_async(
        self, path: str, weights_access_token: str | None = None
    ) -> APIFuture[LoadWeightsResponse]:
        """Async version of `load_state`.

        Returns:
            APIFuture[LoadWeightsResponse]: The op's future, once submitted (in the same
            order as the sync call); await it for the result.
        """
        return self.load_state(path, weights_access_token)

    async def load_state_with_optimizer_async(
        self, path: str, weights_access_token: str | None = None
    ) -> APIFuture[LoadWeightsResponse]:
        """Async version of `load_state_with_optimizer`.

        Returns:
            APIFuture[LoadWeightsResponse]: The op's future, once submitted (in the same
            order as the sync call); await it for the result.
        """
        return self.load_state_with_optimizer(path, weights_access_token)

    async def save_weights_for_sampler_async(
        self,
        name: str,
        ttl_seconds: int | None = None,
        user_metadata: dict[str, str] | None = None,
    ) -> APIFuture[SaveWeightsForSamplerResponse]:
        """Async version of `save_weights_for_sampler`.

        Returns:
            APIFuture[SaveWeightsForSamplerResponse]: The op's future, once submitted (in the same
            order as the sync call); await it for the result.
        """
        return self.save_weights_for_sampler(name, ttl_seconds, user_metadata)

    # ----- SDK 0.38 surface: exports, tokenizer, sampling clients, telemetry -----------------

    def save_weights_external(
        self,
        name: str,
        ttl_seconds: int | None = None,
        age_encryption_recipients: list[str] | None = None,
    ) -> APIFuture[SaveWeightsExternalResponse]:
        """Export the weights as `tinker://<model_id>/external_weights/<name>` (HTTP only).

        Download them with `RestClient.get_external_weights_urls`.

        Args:
            name: The export's name.
            ttl_seconds: Seconds until it expires; None: it never does.
            age_encryption_recipients: age public keys to encrypt the files for, if any.

        Returns:
            APIFuture[SaveWeightsExternalResponse]: Its `path` is the export's tinker path.

        Raises:
            ConfigurationError: Over the gRPC transport.
        """
        wire = json_wire(self._transport, "save_weights_external")
        return self._single(
            lambda seq: wire.submit_json_op(
                "/save_weights_external",
                save_weights_external_body(
                    self.model_id, seq, name, ttl_seconds, age_encryption_recipients
                ),
                "SaveWeightsExternal",
                # the SDK answers only the path (SaveWeightsExternalResponse)
                lambda body: SaveWeightsExternalResponse(path=str(body["path"])),
            )
        )

    async def save_weights_external_async(
        self,
        name: str,
        ttl_seconds: int | None = None,
        age_encryption_recipients: list[str] | None = None,
    ) -> APIFuture[SaveWeightsExternalResponse]:
        """Async version of `save_weights_external`.

        Returns:
            APIFuture[SaveWeightsExternalResponse]: The op's future, once submitted (in the same
            order as the sync call); await it for the result.
        """
        return self.save_weights_external(name, ttl_seconds, age_encryption_recipients)

    def get_tokenizer(self) -> Any:
        """Load the model's tokenizer (tinker_ref/tokenizers.py).

        Returns:
            Any: The mock's built-in tokenizer for its test models, else the one
            `transformers.AutoTokenizer` loads, as the SDK does.

        Raises:
            ImportError: The model needs `transformers` and it is not installed.
            RuntimeError: A Thinking Machines model, whose tokenizer tinker_ref cannot load.
        """
        from tinker_ref.tokenizers import load_tokenizer

        model_name = self._info.model_data.model_name or self._info.model_name or ""
        return load_tokenizer(model_name, self._info.model_data.tokenizer_id)

    def create_sampling_client(
        self,
        model_path: str,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> SamplingClient:
        """Create a sampling client for saved sampler weights (`tinker://...`).

        Args:
            model_path: The saved weights' tinker path, from `save_weights_for_sampler`.
            retry_config: A retry policy of the client's own; None: the ServiceClient's.
            record_stability_info: Mark every sample for the `stable_reinforce` loss.

        Returns:
            SamplingClient: The new client (blocks until the sampling session exists).

        Raises:
            ConfigurationError: `model_path` does not start with "tinker://".
        """
        return self.service.create_sampling_client(
            model_path, None, retry_config, record_stability_info
        )

    async def create_sampling_client_async(
        self,
        model_path: str,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> SamplingClient:
        """Async version of `create_sampling_client`.

        Returns:
            SamplingClient: The client itself.
        """
        return await self.service.create_sampling_client_async(
            model_path, None, retry_config, record_stability_info
        )

    def get_telemetry(self) -> None:
        """Return None: tinker_ref sends no telemetry (the SDK's answer with TINKER_TELEMETRY=0)."""
        return None

    def __repr__(self) -> str:
        return f"TrainingClient(model_id={self.model_id!r})"


async def _gather_all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Like `asyncio.gather`, but every awaitable has finished when it returns or raises (the
    first error), so no submission is left running behind a failed call."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
