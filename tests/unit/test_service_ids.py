"""Deterministic identifiers: the same seed and sequence give the same ids; formats the SDK
derives itself are exact."""

from __future__ import annotations

import pytest

from mock_server.service import ids
from mock_server.service.ids import IdMinter


@pytest.mark.spec("WIRE-4", "DET-1")
def test_same_seed_same_sequence_same_ids() -> None:
    def run(seed: int) -> list[str]:
        minter = IdMinter(seed)
        return [minter.session_id(), minter.request_id(), minter.request_id(), minter.session_id()]

    assert run(0) == run(0)
    assert run(0) != run(1)
    assert len(set(run(0))) == 4


def test_counters_are_per_kind() -> None:
    minter = IdMinter(5)
    first_session = minter.session_id()
    minter.request_id()
    assert first_session.startswith("sess-0-")
    assert minter.session_id().startswith("sess-1-")


@pytest.mark.spec("WIRE-4")
def test_formats_the_sdk_computes() -> None:
    assert ids.model_id("sess-0-abc", 3) == "sess-0-abc:train:3"
    assert ids.session_of_model("sess-0-abc:train:3") == "sess-0-abc"
    assert ids.session_of_model("not a model id") is None
    assert ids.sampling_session_id("sess-0-abc", 1) == "sess-0-abc:sample:1"
    assert ids.sample_sequence_ids("s:sample:1", 4, 2) == ["s:sample:1:4:0", "s:sample:1:4:1"]
