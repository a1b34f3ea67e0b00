"""A transport wrapper that injects the ordering faults real networks produce.

`FaultInjectingTransport(inner)` replaces a ServiceClient's transport (it is a `Transport` by
delegation) and passes every call through, except that the *next* seq_id-carrying training
submission (forward_backward or optim_step) can be armed to be

- `"hold"`: not sent until the submission after it has been sent, so the backend receives
  seq_id k+1 before k (it must buffer k+1 and still run k first). The TrainingClient is not
  told: it moves on as if k had been accepted, exactly as when a POST is slow;
- `"duplicate"`: sent twice with the same seq_id and body, as a retry after a lost response
  is (the backend must dedupe it: same request_id, runs once);
- `"conflict"`: followed by a *different* request under the same seq_id (an optim_step
  with another learning rate), which the backend must refuse (`ConflictError`).

What happened is appended to `events` (read into the state machine's `note()` output) and
outcomes of the extra requests to `duplicates` / `conflicts`, which the machine checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from tinker_ref.errors import APIError
from tinker_ref.transport.base import LossFnConfig, Pending, Transport
from tinker_ref.types import AdamParams, Datum, ForwardBackwardOutput
from tinker_ref.types.responses import OptimStepResponse

T = TypeVar("T")
PLANS = ("hold", "duplicate", "conflict")


class _HeldPending(Pending[T]):
    """The Pending handed back for a held submission; resolves once it was really sent."""

    def __init__(self, sent: asyncio.Future[Pending[T]]) -> None:
        self._sent = sent

    @property
    def request_id(self) -> str:
        return self._sent.result().request_id if self._sent.done() else "(held)"

    async def result(self) -> T:
        return await (await self._sent).result()


class FaultInjectingTransport:
    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.plan: str | None = None
        self.events: list[str] = []
        self.duplicates: list[tuple[str, str]] = []  # (original request_id, the retry's)
        self.conflicts: list[BaseException | None] = []  # None = the backend accepted it
        self._held: tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]] | None = None

    def reset(self) -> None:
        """Forget a plan left armed by an example that failed half-way."""
        self.plan, self._held = None, None

    def arm(self, plan: str) -> None:
        if plan not in PLANS:
            raise ValueError(f"unknown fault plan {plan!r}; known: {', '.join(PLANS)}")
        self.plan = plan

    async def _release_held(self) -> None:
        if self._held is None:
            return
        submit, sent = self._held
        self._held = None
        try:
            sent.set_result(await submit())
        except BaseException as exc:  # handed to whoever awaits the held op's result
            sent.set_exception(exc)

    async def _sequenced(
        self,
        what: str,
        model_id: str,
        seq_id: int,
        submit: Callable[[], Awaitable[Pending[T]]],
    ) -> Pending[T]:
        plan, self.plan = self.plan, None
        if plan == "hold":
            sent: asyncio.Future[Pending[T]] = asyncio.get_running_loop().create_future()
            self._held = (submit, sent)
            self.events.append(f"held {what} seq_id={seq_id}")
            return _HeldPending(sent)
        try:
            pending = await submit()
        finally:
            await self._release_held()  # k+1 is out: now send k
        if plan == "duplicate":
            again = await submit()
            self.duplicates.append((pending.request_id, again.request_id))
            self.events.append(f"resent {what} seq_id={seq_id}")
        elif plan == "conflict":
            other = AdamParams(learning_rate=0.5)
            try:
                await self.inner.optim_step(model_id, seq_id, other)
                self.conflicts.append(None)
            except APIError as exc:
                self.conflicts.append(exc)
            self.events.append(f"sent a different request under {what} seq_id={seq_id}")
        return pending

    # ----- sequenced training ops: faults apply -----

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
        def submit() -> Awaitable[Pending[ForwardBackwardOutput]]:
            return self.inner.forward_backward(
                model_id, seq_id, data, loss_fn, loss_fn_config, forward_only, custom_loss
            )

        what = "forward" if forward_only else "forward_backward"
        return await self._sequenced(what, model_id, seq_id, submit)

    async def optim_step(
        self, model_id: str, seq_id: int, adam_params: AdamParams
    ) -> Pending[OptimStepResponse]:
        def submit() -> Awaitable[Pending[OptimStepResponse]]:
            return self.inner.optim_step(model_id, seq_id, adam_params)

        return await self._sequenced("optim_step", model_id, seq_id, submit)

    # ----- everything else passes through unchanged -----

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
