"""The built-in losses: exact elementwise formulas, their inputs, config keys and defaults.

Notation per token t (spec LOSS-9 to LOSS-14): l_t the learner's target logprob
(differentiable), q_t = inputs["logprobs"] (sampler logprob, constant), A_t = "advantages",
w_t = "weights", r_t = exp(l_t - q_t). Every loss is a quantity to minimise and is reduced by
a plain **sum** over tokens (and K), then over datums, by the caller: nothing here normalises,
because any normalisation rescales the gradients that custom-loss training relies on.

A `LossSpec` validates one datum's inputs (shapes, dtypes, finiteness) before any compute,
so a rejected request never touches the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mock_server.engine.errors import InvalidInputError

ConfigValue = float | str
Inputs = Mapping[str, Tensor]
Config = Mapping[str, ConfigValue]
Elementwise = Callable[[Tensor, Inputs, Config], Tensor]

CLIP_DEFAULTS = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}
_RL_INPUTS = ("logprobs", "advantages")


@dataclass(frozen=True)
class LossSpec:
    name: str
    elementwise: Elementwise  # (logprobs shaped like target_tokens, inputs, config) -> same shape
    required_inputs: tuple[str, ...]  # besides target_tokens
    optional_inputs: tuple[str, ...] = ()
    config_defaults: Mapping[str, ConfigValue | None] = field(
        default_factory=dict
    )  # None = required
    multi_target: bool = False  # accepts target_tokens of shape (N, K)

    def resolve_config(self, config: Config) -> dict[str, ConfigValue]:
        unknown = sorted(set(config) - set(self.config_defaults))
        if unknown:
            accepted = ", ".join(sorted(self.config_defaults)) or "none"
            raise InvalidInputError(
                f"loss_fn_config.{unknown[0]}",
                f"{self.name} does not take this key (accepted keys: {accepted})",
            )
        resolved: dict[str, ConfigValue] = {}
        for key, default in self.config_defaults.items():
            value = config.get(key, default)
            if value is None:
                raise InvalidInputError(
                    f"loss_fn_config.{key}", f"{self.name} requires this key; none was given"
                )
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise InvalidInputError(
                    f"loss_fn_config.{key}", f"expected a number, got {value!r}"
                )
            if not math.isfinite(float(value)):
                raise InvalidInputError(f"loss_fn_config.{key}", f"must be finite, got {value!r}")
            resolved[key] = float(value)
        return resolved

    def validate(self, index: int, num_tokens: int, inputs: Inputs, vocab_size: int) -> None:
        """Check one datum's loss_fn_inputs; `num_tokens` is its model_input length."""
        where = f"data[{index}].loss_fn_inputs"
        allowed = {"target_tokens", *self.required_inputs, *self.optional_inputs}
        for key in inputs:
            if key not in allowed:
                raise InvalidInputError(
                    f"{where}.{key}",
                    f"{self.name} does not take this input "
                    f"(accepted: {', '.join(sorted(allowed))})",
                )
        for key in ("target_tokens", *self.required_inputs):
            if key not in inputs:
                raise InvalidInputError(f"{where}.{key}", f"{self.name} requires this input")
        targets = inputs["target_tokens"]
        _check_dtype(f"{where}.target_tokens", targets, torch.int64)
        ranks = (1, 2) if self.multi_target else (1,)
        if targets.dim() not in ranks or targets.shape[0] != num_tokens:
            expected = "[N] or [N, K]" if self.multi_target else "[N]"
            raise InvalidInputError(
                f"{where}.target_tokens",
                f"expected shape {expected} with N = model_input length {num_tokens}, "
                f"got {list(targets.shape)}",
            )
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab_size):
            bad = int(targets.min()) if int(targets.min()) < 0 else int(targets.max())
            raise InvalidInputError(
                f"{where}.target_tokens", f"token id {bad} outside the vocabulary [0, {vocab_size})"
            )
        for key in (*self.required_inputs, *self.optional_inputs):
            if key not in inputs:
                continue
            value = inputs[key]
            _check_dtype(f"{where}.{key}", value, torch.float32)
            # CE weights follow target_tokens ([N] or [N, K]); RL inputs are per token, [N].
            expected_shape = targets.shape if key == "weights" else torch.Size([num_tokens])
            if value.shape != expected_shape:
                raise InvalidInputError(
                    f"{where}.{key}",
                    f"expected shape {list(expected_shape)}, got {list(value.shape)}",
                )
            if not bool(torch.isfinite(value).all()):
                raise InvalidInputError(f"{where}.{key}", "contains NaN or infinity")


def _check_dtype(where: str, value: Tensor, dtype: torch.dtype) -> None:
    if value.dtype != dtype:
        expected = str(dtype).removeprefix("torch.")
        raise InvalidInputError(
            where, f"expected dtype {expected}, got {str(value.dtype).removeprefix('torch.')}"
        )


def _clip_bounds(inputs: Inputs, config: Config) -> tuple[Tensor | float, Tensor | float]:
    """Absolute ratio bounds (0.8, 1.2 by default); per-token inputs override the config."""
    low = inputs.get("clip_low_threshold", config["clip_low_threshold"])
    high = inputs.get("clip_high_threshold", config["clip_high_threshold"])
    return low, high  # type: ignore[return-value]


def _clamp(x: Tensor, low: Tensor | float, high: Tensor | float) -> Tensor:
    # torch.clamp's gradient is 1 on the closed interval [low, high]; a minimum/maximum pair
    # would split it between its equal inputs and halve the gradient exactly at a bound.
    low_t = torch.as_tensor(low, dtype=x.dtype)
    high_t = torch.as_tensor(high, dtype=x.dtype)
    return torch.clamp(x, low_t, high_t)


def cross_entropy(logprobs: Tensor, inputs: Inputs, config: Config) -> Tensor:
    return -(logprobs * inputs["weights"])


def importance_sampling(logprobs: Tensor, inputs: Inputs, config: Config) -> Tensor:
    ratio = torch.exp(logprobs - inputs["logprobs"])
    return -(ratio * inputs["advantages"])


def ppo(logprobs: Tensor, inputs: Inputs, config: Config) -> Tensor:
    advantages = inputs["advantages"]
    ratio = torch.exp(logprobs - inputs["logprobs"])
    low, high = _clip_bounds(inputs, config)
    return -torch.minimum(ratio * advantages, _clamp(ratio, low, high) * advantages)


def cispo(logprobs: Tensor, inputs: Inputs, config: Config) -> Tensor:
    ratio = torch.exp(logprobs - inputs["logprobs"])
    low, high = _clip_bounds(inputs, config)
    return -(_clamp(ratio, low, high).detach() * logprobs * inputs["advantages"])


def dro(logprobs: Tensor, inputs: Inputs, config: Config) -> Tensor:
    beta = float(config["beta"])
    drift = logprobs - inputs["logprobs"]
    return -(logprobs * inputs["advantages"] - 0.5 * beta * drift * drift)


def gspo(logprobs: Tensor, inputs: Inputs, config: Config) -> Tensor:
    """Sequence-level ratio s = exp(mean over the mask of (sg(l) - q)), carried per token as
    s_t = sg(s) * exp(l_t - sg(l_t)) so each token's gradient is A_t * s; an empty mask gives s = 1.
    """
    advantages = inputs["advantages"]
    in_ratio = inputs["sequence_ratio_mask"] != 0
    detached = logprobs.detach()
    if bool(in_ratio.any()):
        log_ratio = (detached - inputs["logprobs"])[in_ratio].mean()
    else:
        log_ratio = torch.zeros(())
    ratio = torch.exp(log_ratio + logprobs - detached)
    low, high = _clip_bounds(inputs, config)
    return -torch.minimum(ratio * advantages, _clamp(ratio, low, high) * advantages)


_CLIP_INPUTS = ("clip_low_threshold", "clip_high_threshold")

LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("cross_entropy", cross_entropy, ("weights",), multi_target=True),
        LossSpec("importance_sampling", importance_sampling, _RL_INPUTS),
        LossSpec("ppo", ppo, _RL_INPUTS, _CLIP_INPUTS, CLIP_DEFAULTS),
        LossSpec("cispo", cispo, _RL_INPUTS, _CLIP_INPUTS, CLIP_DEFAULTS),
        LossSpec("dro", dro, _RL_INPUTS, (), {"beta": None}),
        LossSpec("gspo", gspo, (*_RL_INPUTS, "sequence_ratio_mask"), _CLIP_INPUTS, CLIP_DEFAULTS),
    )
}


def get_loss(name: str) -> LossSpec:
    spec = LOSSES.get(name)
    if spec is None:
        raise InvalidInputError(
            "loss_fn", f"unknown loss {name!r}; built-in losses: {', '.join(LOSSES)}"
        )
    return spec
