"""Model-based testing of any Tinker backend (like `zarr.testing`: shipped so others can use it).

`TinkerStateMachine` (a hypothesis `RuleBasedStateMachine`) drives a backend through the
`tinker_ref` client with random valid and invalid request sequences and checks every answer
against a plain model: exact predictions from a `ReferenceModel` when the backend's network is
known (the mock server), self-consistency within a tolerance otherwise. `pytest_plugin` adds
`--tinker-base-url` / `--tinker-api-key`; see docs/state-machine.md.

Needs the dev extras (hypothesis, torch); the client itself does not import this package.
"""

from tinker_ref.testing.reference import ReferenceArchitecture, ReferenceModel
from tinker_ref.testing.stateful import (
    BackendConfig,
    TinkerStateMachine,
    machine_for,
    run_state_machine,
    with_capabilities,
)

__all__ = [
    "BackendConfig",
    "ReferenceArchitecture",
    "ReferenceModel",
    "TinkerStateMachine",
    "machine_for",
    "run_state_machine",
    "with_capabilities",
]
