"""The mock servers of a run: one in-process mock per distinct server setting of the cases.

Cases that need a different `client/config` (e.g. `fwdbwd_max_chunk_len: 2` to force chunking)
get their own mock; all others share one. Each mock records tensors (so wire checks can read the
weights a client sent) and gets the fault plan of its cases — rules keyed by case name, so one
case's faults never touch another's traffic. The runner reads the request record and each
model's final state through the service directly (the mock runs in this process).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from conformance.cases import Case
from conformance.checks import fault_seq_id
from conformance.state import Fingerprint, fingerprint
from mock_server.embedded import EmbeddedServer, serve
from mock_server.faults import FaultPlan, FaultRule
from mock_server.service import ServerConfig

# A seq_id an SDK reserved but never sent (a bug some SDKs have) blocks the ops behind it until
# this gap timeout fails them. On loopback a missing seq_id arrives within milliseconds if it
# arrives at all, so the run waits 15 s instead of the server's default 60 s.
SEQ_GAP_TIMEOUT_S = 15.0


def setting_key(case: Case) -> str:
    return json.dumps(case.get("server", {}), sort_keys=True)


@dataclass(frozen=True)
class FinalState:
    fingerprint: Fingerprint  # tolerant: comparable across machines (conformance/state.py)
    digest: str  # bitwise: comparable only within one process


@dataclass(frozen=True)
class Mock:
    server: EmbeddedServer
    grpc_target: str | None

    def endpoints(self) -> dict[str, Any]:
        return {"http": self.server.url, "grpc": self.grpc_target}

    def records(self, case: str) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.server.call(self.server.service.records.records, case)]

    def final_state(self, model_id: str) -> FinalState | None:
        """The model's trained state now (None: no such model): its fingerprint, compared with
        a tolerance against stored expectations, and its sha256, compared bit for bit with a
        twin case of the same run."""

        def read() -> FinalState | None:
            model = self.server.service.ctx.registry.models.get(model_id)
            if model is None or model.training is None:
                return None
            tensors = dict(model.training.weights())
            tensors.update(model.training.optimizer_state().tensors)
            return FinalState(fingerprint(tensors), model.training.digest(include_optimizer=True))

        return self.server.call(read)  # type: ignore[no-any-return]


def fault_plan(cases: Sequence[Case]) -> FaultPlan | None:
    """The mock's rules for the cases' faults: a fault on a step becomes a rule on the seq_id
    of the op it hits (`checks.fault_seq_id`), so it fires whatever endpoint an SDK sends the
    op to; an endpoint fault stays one."""
    rules = []
    for case in cases:
        for fault in case.get("faults", []):
            settings = {k: v for k, v in fault.items() if k not in ("step", "phase", "chunk")}
            if "step" in fault:
                settings["seq_id"] = fault_seq_id(case, fault)
                settings["target"] = settings.pop("request", "submit")
                settings["endpoint"] = None
            rules.append(FaultRule(case=case["name"], **settings))
    return FaultPlan(tuple(rules)) if rules else None


@contextmanager
def start_mocks(
    cases: Sequence[Case], grpc: bool, engine_processes: int = 0
) -> Iterator[dict[str, Mock]]:
    """Mocks keyed by `setting_key`; stopped when the block ends. `engine_processes`: see
    `ServerConfig.engine_processes`."""
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(setting_key(case), []).append(case)
    with ExitStack() as stack:
        mocks = {}
        for key, members in groups.items():
            overrides = members[0].get("server", {}).get("client_config", {})
            config = ServerConfig(
                port=0,
                grpc_port=0 if grpc else None,
                seq_gap_timeout_seconds=SEQ_GAP_TIMEOUT_S,
                client_config_overrides=overrides,
                record_tensors=True,
                fault_plan=fault_plan(members),
                engine_processes=engine_processes,
            )
            server = stack.enter_context(serve(config))
            mocks[key] = Mock(server, _grpc_target(server) if grpc else None)
        yield mocks


def _grpc_target(server: EmbeddedServer) -> str | None:
    # The gRPC front end is optional in the embedded server; None makes gRPC cases error out
    # with a message saying so instead of silently testing HTTP.
    target = getattr(server, "grpc_target", None) or getattr(server, "grpc_url", None)
    return str(target).removeprefix("grpc://") if target else None
