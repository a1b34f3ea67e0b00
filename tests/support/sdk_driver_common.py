"""What the official-SDK drivers (`official_sdk_driver.py`, `legacy_sdk_driver.py`) share; runs
INSIDE an official SDK's venv, imported by its bare name (the drivers run as scripts, so this
folder is on sys.path). Standard library, torch and the SDK only, so it works with every SDK
version the drivers cover: calls are resolved the same way whether a version returns clients,
results or futures of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tinker import types


def resolve(value: Any) -> Any:
    """A client or result from a call that returns either it or a future of it."""
    result = getattr(value, "result", None)
    return result() if callable(result) else value


def token_datum(tokens: Sequence[int], weight: float = 1.0) -> types.Datum:
    """Next-token prediction over `tokens`, every target weighted `weight`."""
    tokens = list(tokens)
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [weight] * (len(tokens) - 1)},
    )


def text_datum(text: str, weight: float = 1.0) -> types.Datum:
    return token_datum(list(text.encode()), weight)


def logprobs_of(output: Any) -> list[list[float]]:
    return [list(out["logprobs"].data) for out in output.loss_fn_outputs]


def train_ce_then_custom(
    tc: Any,
    train_data: list[types.Datum],
    eval_data: list[types.Datum],
    adam: types.AdamParams,
    steps: int,
    custom_loss: Callable[..., Any],
    custom_loss_metric: str,
) -> dict[str, Any]:
    """The training part of the acceptance workflow: a forward, `steps` cross-entropy steps,
    `steps` custom-loss steps and a forward on `eval_data`. Each custom-loss step is pipelined:
    its optim_step is submitted before the custom-loss result is resolved."""
    first_forward = tc.forward(train_data, "cross_entropy").result()
    ce_losses = []
    for _ in range(steps):
        out = tc.forward_backward(train_data, "cross_entropy").result()
        tc.optim_step(adam).result()
        ce_losses.append(out.metrics["loss:sum"])
    custom_losses, custom_metrics = [], {}
    for _ in range(steps):
        custom = tc.forward_backward_custom(train_data, custom_loss)
        optim = tc.optim_step(adam)
        custom_metrics = resolve(custom).metrics
        optim.result()
        custom_losses.append(custom_metrics[custom_loss_metric])
    after_training = tc.forward(eval_data, "cross_entropy").result()
    return {
        "first_forward": logprobs_of(first_forward),
        "first_forward_loss": first_forward.metrics["loss:sum"],
        "ce_losses": ce_losses,
        "custom_losses": custom_losses,
        "custom_metrics": custom_metrics,
        "after_training": logprobs_of(after_training),
    }
