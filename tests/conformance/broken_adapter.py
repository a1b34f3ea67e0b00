"""A deliberately broken conformance adapter: tinker_ref over HTTP with injected bugs.

    python broken_adapter.py --break weights-sign:CASE --break metrics-raw:CASE ...

Each bug is switched on only while its case runs (cases run one at a time here):

- `weights-sign`: the custom-loss backward sends +dC/dlogprob instead of -dC/dlogprob;
- `metrics-raw`: the user's custom-loss metrics are passed through unconverted (tensors stay
  tensors: "metrics not stringified");
- `seq-reuse`: every call of a TrainingClient numbers its requests from seq_id 1 again.

Used by test_conformance_broken_adapter.py to show that the suite catches each bug with
expected-vs-got messages. Test code only; never shipped as an adapter.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

ADAPTER_DIR = Path(__file__).resolve().parents[2] / "conformance" / "adapters" / "python"
sys.path.insert(0, str(ADAPTER_DIR))

import adapter  # noqa: E402  (the shipped adapter, found through the path set above)

import tinker_ref.custom_loss as custom_loss  # noqa: E402
import tinker_ref.training_client as training_client  # noqa: E402


@contextmanager
def _flip_weights_sign() -> Iterator[None]:
    as_weights = custom_loss._as_weights
    with mock.patch.object(custom_loss, "_as_weights", lambda gradient: as_weights(-gradient)):
        yield


@contextmanager
def _raw_metrics() -> Iterator[None]:
    # tinker_ref converts user metrics twice (user_metrics, then ForwardBackwardOutput's own
    # float check); the bug has to undo both to reach the protocol.
    checked = training_client.ForwardBackwardOutput

    def unchecked(loss_fn_output_type: str, loss_fn_outputs: Any, metrics: Any = None) -> Any:
        result = checked(loss_fn_output_type, loss_fn_outputs, {})
        object.__setattr__(result, "metrics", dict(metrics or {}))
        return result

    with (
        mock.patch.object(custom_loss, "user_metrics", lambda metrics: dict(metrics)),
        mock.patch.object(training_client, "ForwardBackwardOutput", unchecked),
    ):
        yield


@contextmanager
def _reuse_seq_ids() -> Iterator[None]:
    def reserve(self: Any, count: int) -> range:
        return range(0, count)  # always seq_id 1..count: ids are never consumed

    with mock.patch.object(training_client.TrainingClient, "_reserve", reserve):
        yield


BREAKS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "weights-sign": _flip_weights_sign,
    "metrics-raw": _raw_metrics,
    "seq-reuse": _reuse_seq_ids,
}


class BrokenAdapter(adapter.Adapter):  # type: ignore[misc]
    def __init__(self, breaks: Mapping[str, str]) -> None:
        super().__init__("tinker_ref", "http")
        self.breaks = dict(breaks)  # case name -> bug

    def run_case(self, message: Mapping[str, Any]) -> dict[str, Any]:
        bug = self.breaks.get(message["case"]["name"])
        if bug is None:
            return super().run_case(message)  # type: ignore[no-any-return]
        with BREAKS[bug]():
            return super().run_case(message)  # type: ignore[no-any-return]


if __name__ == "__main__":
    pairs = [sys.argv[i + 1] for i, arg in enumerate(sys.argv) if arg == "--break"]
    breaks = {case: bug for bug, case in (pair.split(":", 1) for pair in pairs)}
    # One case at a time: a bug is a patch of module globals, live only while its case runs.
    sys.exit(adapter.serve(BrokenAdapter(breaks), "broken-tinker_ref-http", parallel=1))
