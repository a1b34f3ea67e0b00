"""Body fingerprints (mock_server/service/fingerprint.py): the digest of what a request means.

Pinned digests: a change of what is fed for a value changes every fingerprint, which is a
change of the dedupe contract (a retry across such a change would be refused as a conflict),
so it must be deliberate. Equal meanings with other bytes digest alike; other meanings do not."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mock_server.http import parse
from mock_server.service.fingerprint import fingerprint
from tinker_ref import codec, types


def _request(weight: float = 0.5) -> object:
    rng = random.Random(0)
    data = []
    for _ in range(3):
        ids = [rng.randrange(256) for _ in range(9)]
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(ids[:-1]),
                loss_fn_inputs={"target_tokens": ids[1:], "weights": [weight] * 8},
            )
        )
    body = codec.encode_forward_backward_request("m", 3, data, "cross_entropy")
    return ("forward_backward", parse.forward_backward_proto(body))


def _mixed() -> dict[object, object]:
    return {
        "a": [1, 2**70, True, None, 1.5, "x", b"y", bytearray(b"z")],
        3: (np.arange(4, dtype=np.float32).reshape(2, 2), {"n": False}),
        "e": [],
        "t": ("u", 7),
    }


def test_digests_are_pinned() -> None:
    assert fingerprint(_request()) == (
        "0fc101b8143d080bc710bf5a6f8d827880bfe7ee3dfaac0e52c8c923b0755e83"
    )
    assert fingerprint(_mixed()) == (
        "a0b3555b9aa9b378f48bb2dcb668be36635ee457f7ef67d8e38674922071a331"
    )


def test_meaning_not_bytes() -> None:
    reordered = dict(reversed(list(_mixed().items())))
    assert fingerprint(reordered) == fingerprint(_mixed())
    assert fingerprint([1, 2]) == fingerprint((1, 2))  # a JSON list and a decoded tuple
    assert fingerprint(_request(0.25)) != fingerprint(_request())
    assert fingerprint(True) != fingerprint(1) and fingerprint(1) != fingerprint(1.0)
    assert fingerprint(np.zeros(2, np.float32)) != fingerprint(np.zeros(2, np.float64))


def test_unknown_types_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot fingerprint a set"):
        fingerprint({"a": {1, 2}})
