"""The brief's three properties of `forward_backward_custom`, through tinker_ref and a real
(embedded) mock server that records every request body:

- gradient order: for any batch and any permutation of it, the weights the client sends for
  datum i are -dloss/dlogprobs_i of *that* datum (read from the server's record);
- metric stringification: any key type and any number-like value comes back as a `str` key and
  a Python number, merged with the server's metrics; `loss:sum` is the custom loss and
  `surrogate_loss:sum` the server's surrogate, whatever the user named their metrics;
- optim_step compatibility: a custom-loss output followed by `optim_step` gives the same weights,
  bit for bit, as the equivalent built-in `cross_entropy` loss, for random data.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mock_server.embedded import EmbeddedServer
from mock_server.testing import MockServer
from tests.support.training import token_mean_nll
from tinker_ref import ServiceClient, TrainingClient, types

MODEL = "tinker-ref/tiny-bytes"  # vocabulary 259
ADAM = types.AdamParams(learning_rate=1e-2)

# One mock for the module (the shipped `tinker_mock_module` fixture: hypothesis tests may not
# use function-scoped ones), recording every request body with its tensor values.
pytestmark = pytest.mark.tinker_mock(seed=0, record_tensors=True)


@pytest.fixture(scope="module")
def service(tinker_mock_module: MockServer) -> Iterator[ServiceClient]:
    with ServiceClient(base_url=tinker_mock_module.url, api_key="tml-properties") as client:
        yield client


@pytest.fixture(scope="module")
def training(service: ServiceClient) -> TrainingClient:
    # Only forward_backward_custom runs on it (no optim_step): its logprobs never change.
    return service.create_lora_training_client(MODEL, rank=4, seed=1)


_seeds = itertools.count(100)


def last_backward(mock: EmbeddedServer, model_id: str) -> dict[str, Any]:
    records = mock.call(lambda: mock.service.records.records())
    bodies = [
        r.body
        for r in records
        if r.endpoint == "/api/v1/forward_backward"
        and r.body["model_id"] == model_id
        and not r.body["forward_only"]
    ]
    return bodies[-1]  # type: ignore[no-any-return]


@st.composite
def datums(draw: st.DrawFn, min_size: int = 1, max_size: int = 5) -> list[types.Datum]:
    batch = []
    for _ in range(draw(st.integers(min_size, max_size))):
        length = draw(st.integers(1, 8))
        tokens = draw(st.lists(st.integers(0, 256), min_size=length + 1, max_size=length + 1))
        weights = draw(
            st.lists(
                st.floats(-2, 2, width=32, allow_subnormal=False),
                min_size=length,
                max_size=length,
            )
        )
        batch.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
            )
        )
    return batch


def weighted_square_loss(
    data: list[types.Datum], logprobs: list[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """A nonlinear loss whose gradient differs per datum: sum_i sum_t w_it * lp_it^2."""
    terms = [
        (d.loss_fn_inputs["weights"].to_torch() * lp * lp).sum()
        for d, lp in zip(data, logprobs, strict=True)
    ]
    return torch.stack(terms).sum(), {}


def recording(loss_fn: Any, seen: list[torch.Tensor]) -> Any:
    """`loss_fn`, also keeping a copy of the logprobs it was given."""

    def wrapped(
        data: list[types.Datum], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        seen.extend(lp.detach().clone() for lp in logprobs)
        return loss_fn(data, logprobs)  # type: ignore[no-any-return]

    return wrapped


@pytest.mark.spec("CL-4", "CL-7")
@given(batch=datums(), permutation_seed=st.integers(0, 2**16))
def test_weights_sent_for_each_datum_are_minus_its_own_gradient_in_any_order(
    tinker_mock_module: MockServer,
    training: TrainingClient,
    batch: list[types.Datum],
    permutation_seed: int,
) -> None:
    order = np.random.default_rng(permutation_seed).permutation(len(batch)).tolist()
    for arrangement in (batch, [batch[i] for i in order]):
        seen: list[torch.Tensor] = []
        loss_fn = recording(weighted_square_loss, seen)
        training.forward_backward_custom(arrangement, loss_fn).result(timeout=60)
        sent = last_backward(tinker_mock_module.embedded, training.model_id)["data"]
        assert len(sent) == len(arrangement)
        for datum, logprobs, record in zip(arrangement, seen, sent, strict=True):
            assert record["tokens"] == datum.model_input.to_ints()
            w = datum.loss_fn_inputs["weights"].to_torch()
            expected = -(2 * w * logprobs)  # -d(w lp^2)/dlp, by hand, not by autograd
            got = torch.tensor(record["loss_fn_inputs"]["weights"]["values"])
            assert got.shape == logprobs.shape
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def metric_values() -> st.SearchStrategy[Any]:
    finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)
    return st.one_of(
        finite,
        st.integers(-(2**31), 2**31),
        st.booleans(),
        finite.map(lambda x: torch.tensor(x)),
        finite.map(lambda x: torch.tensor([x], requires_grad=True) * 1),  # one element, a graph
        finite.map(np.float32),
        st.integers(-1000, 1000).map(np.int64),
        finite.map(lambda x: np.array([x])),
    )


def metric_keys() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(min_size=1, max_size=12),
        st.integers(-5, 5),
        st.floats(-1, 1, allow_nan=False),
        st.booleans(),
        st.sampled_from(["loss:sum", "surrogate_loss:sum", "loss", "accuracy:mean"]),
    )


@pytest.mark.spec("CL-13", "CL-14")
@given(
    metrics=st.dictionaries(metric_keys(), metric_values(), max_size=6).filter(
        lambda d: len({str(k) for k in d}) == len(d)  # distinct once stringified
    )
)
def test_user_metrics_come_back_as_str_keys_and_python_numbers(
    training: TrainingClient, metrics: dict[Any, Any]
) -> None:
    data = [
        types.Datum(
            model_input=types.ModelInput.from_ints([1, 2, 3]),
            loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1.0, 1.0, 0.5]},
        )
    ]
    observed: dict[str, float] = {}

    def loss_fn(
        data: list[types.Datum], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[Any, Any]]:
        loss = -logprobs[0].sum()
        observed["loss"] = loss.item()
        return loss, metrics

    result = training.forward_backward_custom(data, loss_fn).result(timeout=60).metrics
    for key, value in metrics.items():
        if str(key) in ("loss:sum", "surrogate_loss:sum"):
            continue  # the client's own values win, checked below
        got = result[str(key)]
        assert type(got) in (int, float)
        plain = value.detach() if isinstance(value, torch.Tensor) else value
        expected = float(np.asarray(plain).reshape(()))
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert all(type(key) is str for key in result)
    assert result["loss:sum"] == pytest.approx(observed["loss"], rel=1e-6)
    # weights = -dloss/dlogprobs = 1, so the server's surrogate sum(-w lp) is the loss itself.
    assert result["surrogate_loss:sum"] == pytest.approx(observed["loss"], rel=1e-5)
    assert set(result) == {str(k) for k in metrics} | {"loss:sum", "surrogate_loss:sum"}


def probe_logprobs(training: TrainingClient) -> list[list[float]]:
    probe = [
        types.Datum(
            model_input=types.ModelInput.from_ints(list(b"probe text")),
            loss_fn_inputs={"target_tokens": list(b"robe text!"), "weights": [1.0] * 10},
        )
    ]
    out = training.forward(probe, "cross_entropy").result(timeout=60)
    return [o["logprobs"].tolist() for o in out.loss_fn_outputs]


def linear_loss(
    data: list[types.Datum], logprobs: list[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """cross_entropy written by hand: sum_i sum_t -w_it * lp_it."""
    return torch.stack(
        [
            -(d.loss_fn_inputs["weights"].to_torch() * lp).sum()
            for d, lp in zip(data, logprobs, strict=True)
        ]
    ).sum(), {}


@pytest.mark.spec("DET-4", "CL-11")
@given(batch=datums(max_size=4), loss=st.sampled_from(["linear", "mean_nll"]))
def test_custom_loss_then_optim_step_equals_the_builtin_loss_bit_for_bit(
    service: ServiceClient, batch: list[types.Datum], loss: str
) -> None:
    seed = next(_seeds)
    custom = service.create_lora_training_client(MODEL, rank=4, seed=seed)
    builtin = service.create_lora_training_client(MODEL, rank=4, seed=seed)
    if loss == "linear":
        loss_fn, builtin_data = linear_loss, batch
    else:
        # mean NLL over all N target tokens == cross_entropy with weights 1/N (spec DET-4).
        n = sum(d.model_input.length for d in batch)
        loss_fn = token_mean_nll
        builtin_data = [
            types.Datum(
                model_input=d.model_input,
                loss_fn_inputs={
                    "target_tokens": d.loss_fn_inputs["target_tokens"],
                    "weights": types.TensorData.from_torch(
                        torch.full((d.model_input.length,), 1.0) / n
                    ),
                },
            )
            for d in batch
        ]
    custom.forward_backward_custom(batch, loss_fn)
    custom.optim_step(ADAM).result(timeout=60)
    builtin.forward_backward(builtin_data, "cross_entropy")
    builtin.optim_step(ADAM).result(timeout=60)
    before = probe_logprobs(service.create_lora_training_client(MODEL, rank=4, seed=seed))
    after = probe_logprobs(custom)
    assert after == probe_logprobs(builtin)
    if any(float(d.loss_fn_inputs["weights"].to_torch().abs().sum()) > 0 for d in batch):
        assert after != before  # the step really changed the weights
