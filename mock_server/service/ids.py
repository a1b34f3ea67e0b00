"""Deterministic identifiers: the same server seed and request sequence give the same ids.

Session and request ids are minted from a per-kind counter and the server seed (a stable hash,
never `random`), so two runs of one scenario produce byte-identical transcripts. Ids that the
official SDK derives itself follow its formulas exactly: model ids are
`<session_id>:train:<model_seq_id>` (spec WIRE-4); sampling sessions and uploaded
losses use the same shape with their own per-session counters.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

MODEL_ID_PATTERN = re.compile(r"^(?P<session>[A-Za-z0-9_.\-]+):train:(?P<seq>[0-9]+)$")


def _tag(seed: int, kind: str, number: int) -> str:
    digest = hashlib.sha256(f"tinker-mock|{seed}|{kind}|{number}".encode()).hexdigest()
    return digest[:12]


class IdMinter:
    """Mints session and request ids; one per server."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._counters: Counter[str] = Counter()

    def _next(self, kind: str) -> int:
        number = self._counters[kind]
        self._counters[kind] += 1
        return number

    def session_id(self) -> str:
        number = self._next("session")
        return f"sess-{number}-{_tag(self._seed, 'session', number)}"

    def request_id(self) -> str:
        number = self._next("request")
        return f"req-{number}-{_tag(self._seed, 'request', number)}"


def model_id(session_id: str, model_seq_id: int) -> str:
    return f"{session_id}:train:{model_seq_id}"


def sampling_session_id(session_id: str, sampling_session_seq_id: int) -> str:
    return f"{session_id}:sample:{sampling_session_seq_id}"


def loss_id(session_id: str, custom_loss_seq_id: int) -> str:
    return f"{session_id}:loss:{custom_loss_seq_id}"


def sample_sequence_ids(sampling_session: str, seq_id: int, count: int) -> list[str]:
    """One id per returned sequence (the SDK stamps them onto `SampledSequence.sequence_id`)."""
    return [f"{sampling_session}:{seq_id}:{index}" for index in range(count)]


def session_of_model(model: str) -> str | None:
    """The session part of a well-formed model id, else None."""
    match = MODEL_ID_PATTERN.match(model)
    return match.group("session") if match else None
