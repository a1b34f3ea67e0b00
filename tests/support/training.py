"""The datum builder and the custom loss that client-level tests train with.

`datum` turns a token sequence (a `bytes` string is one: the byte-level test models read bytes
as token ids) into a next-token example. `token_mean_nll` is the unweighted mean NLL over every
target token of the batch, the simplest custom loss; unlike the catalogue's
`tinker_ref.testing.losses.mean_nll` (weighted, metric `nll:mean`) it ignores `weights`, so it
equals `cross_entropy` with weights 1/N for any data (spec DET-4), and reports `tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tinker_ref.types import Datum, ModelInput


def datum(tokens: Sequence[int], weights: Sequence[float] | None = None) -> Datum:
    """Next-token datum: input tokens[:-1], targets tokens[1:], weights 1 unless given."""
    targets = list(tokens[1:])
    return Datum(
        ModelInput.from_ints(list(tokens[:-1])),
        {
            "target_tokens": targets,
            "weights": list(weights) if weights is not None else [1.0] * len(targets),
        },
    )


def token_mean_nll(
    data: list[Datum], logprobs: list[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, int]]:
    """-mean of every target token's logprob in the batch; metric `tokens`: how many (N)."""
    flat = torch.cat(logprobs)
    return -flat.mean(), {"tokens": flat.numel()}
