"""SDK 0.38 features the mock refuses, each with a 4xx that names the field and says why.

The mock implements what Tinker's public documentation defines. Where the docs name a feature
but not its semantics, a guess would train differently from the service while looking right, so
the mock refuses it instead (docs/offline-development.md, "What the mock does not do"):

* `stable_reinforce`: the docs describe its API (sampling with `record_stability_info=True`,
  `sequence_id` provenance on training tokens) but not its objective or what is recorded.
* the Dimuon optimizer (`optimizer_config.type = "dimuon"`, `DimuonParams`): the docs name its
  hyperparameters but not its update rule (matrix-sign iterations, preconditioner).
* `age_encryption_recipients` of `save_weights_external`: the mock writes exports in the clear.
"""

from __future__ import annotations

from mock_server.service.errors import InvalidArgument

_LOSS_REASONS = {
    "stable_reinforce": (
        "loss 'stable_reinforce' is not supported by the mock: Tinker's public docs define its "
        "API (record_stability_info sampling, sequence_id provenance) but not its objective"
    ),
}


def check_loss_fn(loss_fn: str) -> None:
    reason = _LOSS_REASONS.get(loss_fn)
    if reason is not None:
        raise InvalidArgument(reason, "loss_fn")


def check_optimizer(optimizer_type: str, field: str) -> None:
    """Model creation (`optimizer_config.type`) and steps (`optimizer_params.type`)."""
    if optimizer_type == "adamw":
        return
    if optimizer_type == "dimuon":
        raise InvalidArgument(
            "optimizer 'dimuon' is not supported by the mock: Tinker's public docs name its "
            "hyperparameters but not its update rule; the mock trains with AdamW only",
            field,
        )
    raise InvalidArgument(
        f"optimizer {optimizer_type!r} is not supported; the mock trains with AdamW only", field
    )


def check_age_recipients(recipients: tuple[str, ...]) -> None:
    if recipients:
        raise InvalidArgument(
            "encrypted exports are not supported by the mock: it writes external weights in "
            "the clear; leave age_encryption_recipients empty",
            "age_encryption_recipients",
        )
