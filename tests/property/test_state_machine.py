"""The model-based suite (`tinker_ref.testing`) against the mock server, and against any backend.

Against the in-process mock the reference model knows the network (the engine's model
*definition*: frozen base weights, LoRA init, `target_logprobs`), while every piece of training
maths (loss formulas, per-chunk summation, direct autograd of custom losses, AdamW, load/save
semantics) is the suite's own, so logprobs, `loss:sum`, `surrogate_loss:sum`, user metrics
and optimizer metrics are compared bit for bit. The server forces chunking (3 datums per
request, first chunk sent last) and runs with two API keys, so cross-key isolation is checked.

Profiles (HYPOTHESIS_PROFILE, see tests/conftest.py): "dev" is the CI default (fast), "ci" the deep
run. With `--tinker-base-url` the same machine runs against that backend too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
import torch
from hypothesis import settings
from torch import Tensor

from mock_server.engine.catalog import get_spec
from mock_server.engine.model import (
    BaseWeights,
    LoraConfig,
    init_adapter,
    init_base_weights,
    target_logprobs,
)
from mock_server.testing import MockServer
from tinker_ref.testing import BackendConfig, run_state_machine, with_capabilities

SERVER_SEED = 0
API_KEY, OTHER_API_KEY = "tml-state-machine", "tml-intruder"
# (examples, steps per example, minimum steps run) per profile: "dev" is CI's fast run,
# "ci" the deep one, "fast" a smoke run for `make test-fast`. The minimum fails the test if
# hypothesis stops exploring. Per transport; both transports together give CI's fast run >= 200
# steps.
PROFILES = {"dev": (8, 15, 100), "ci": (60, 50, 2000), "fast": (3, 10, 20)}
# Shrinking a failure replays examples for up to hypothesis's 5-minute shrink budget; the
# default 300 s pytest timeout would kill it before it prints the shrunk reproduction.
SHRINK_TIMEOUT = pytest.mark.timeout(1200)
# What the machine checks against any backend (within tolerance): the spec's per-token loss
# sums, the custom-loss metric rewrite, checkpoints that continue a run, reused seq_ids refused,
# invalid requests refused without effect. Against the mock it checks more, bit for bit.
# The mock (the shipped `tinker_mock_module` fixture) serves both front ends, forces chunking
# (3 datums per request) and admits two keys, so cross-key isolation is checked.
pytestmark = [
    pytest.mark.spec("LOSS-4", "CL-13", "CKPT-2", "SEQ-7", "WIRE-14"),
    pytest.mark.tinker_mock(
        grpc=True,
        seed=SERVER_SEED,
        api_keys=[API_KEY, OTHER_API_KEY],
        client_config_overrides={"fwdbwd_max_chunk_len": 3},
    ),
]
BITWISE_AGAINST_THE_REFERENCE = pytest.mark.spec(
    "LOSS-9",
    "LOSS-10",
    "LOSS-11",
    "LOSS-12",
    "LOSS-13",
    "LOSS-14",
    "CL-14",
    "OPT-1",
    "OPT-4",
    "OPT-6",
    "CKPT-3",
    "CKPT-7",
    "SMP-7",
    "SEQ-5",
)


class EngineArchitecture:
    """The mock's network, reused for its *definition* only (see the module docstring)."""

    def __init__(self, server_seed: int) -> None:
        self.server_seed = server_seed
        self._bases: dict[str, BaseWeights] = {}

    def _base(self, base_model: str) -> BaseWeights:
        if base_model not in self._bases:
            self._bases[base_model] = init_base_weights(get_spec(base_model), self.server_seed)
        return self._bases[base_model]

    def initial_adapter(self, base_model: str, rank: int, seed: int) -> dict[str, Tensor]:
        return init_adapter(self._base(base_model), LoraConfig(rank=rank), seed)

    def logprobs(
        self, base_model: str, adapter: Mapping[str, Tensor], tokens: Tensor, targets: Tensor
    ) -> Tensor:
        return target_logprobs(self._base(base_model), dict(adapter), tokens, targets)


def _run_settings() -> settings:
    examples, steps, _ = _profile()
    # One bug is enough: shrinking several distinct failures (a broken backend fails many
    # assertions) would multiply the replay time.
    return settings(
        settings(),
        max_examples=examples,
        stateful_step_count=steps,
        report_multiple_bugs=False,
    )


def _profile() -> tuple[int, int, int]:
    return PROFILES.get(settings.get_current_profile_name(), PROFILES["dev"])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The engine's setting for the whole module, the in-process mock's start included; same
    thread count => same reductions. torch's thread count is process-wide: it is restored
    afterwards, so the later tests of this worker keep theirs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mock_config(base_url: str, transport: str) -> BackendConfig:
    return BackendConfig(
        base_url=base_url,
        api_key=API_KEY,
        transport=transport,
        tolerance=0.0,
        architecture=EngineArchitecture(SERVER_SEED),
        other_api_key=OTHER_API_KEY,
    )


@BITWISE_AGAINST_THE_REFERENCE
@SHRINK_TIMEOUT
def test_state_machine_over_http_matches_the_reference_bitwise(
    tinker_mock_module: MockServer,
) -> None:
    run = run_state_machine(_mock_config(tinker_mock_module.url, "http"), _run_settings())
    print(f"state machine over HTTP: {run} steps")
    assert run >= _profile()[2], f"only {run} steps ran"


@BITWISE_AGAINST_THE_REFERENCE
@pytest.mark.spec("WIRE-16")
@SHRINK_TIMEOUT
def test_state_machine_over_grpc_matches_the_reference_bitwise(
    tinker_mock_module: MockServer,
) -> None:
    target = tinker_mock_module.grpc_target
    run = run_state_machine(_mock_config(target, "grpc"), _run_settings())
    print(f"state machine over gRPC: {run} steps")
    assert run >= _profile()[2], f"only {run} steps ran"


@SHRINK_TIMEOUT
def test_state_machine_against_the_given_backend(tinker_backend: BackendConfig | None) -> None:
    if tinker_backend is None:
        pytest.skip("no --tinker-base-url given")
    run = run_state_machine(with_capabilities(tinker_backend), _run_settings())
    print(f"state machine against {tinker_backend.base_url}: {run} steps")
