"""Sampling through 429s, then a `with` block that fails: written once for the official SDK 0.38
and for tinker_ref (only the import differs), to compare what each does on the same faults.

    python resilience_probe.py official|tinker_ref http|grpc BASE_URL_OR_TARGET

The server's fault plan answers the first sample submissions 429; the client must back off and
sample anyway. Then the `with ServiceClient(...)` block raises, so leaving it must finish the
session as "errored" (the server's record shows the reason). Prints one JSON line with the
sampled tokens. Runs inside the official SDK's virtualenv too, so it imports nothing from this
repository.
"""

from __future__ import annotations

import json
import sys
from typing import Any


class ScriptFailed(RuntimeError):
    """What the user's script raises inside the `with` block."""


def main(sdk: str, transport: str, address: str) -> dict[str, Any]:
    if sdk == "official":
        import tinker

        def service_client() -> Any:
            return tinker.ServiceClient(base_url=address, api_key="tml-probe")
    else:
        import tinker_ref as tinker  # type: ignore[no-redef]

        def service_client() -> Any:
            return tinker.ServiceClient(base_url=address, api_key="tml-probe", transport=transport)

    types = tinker.types
    tokens: list[int] = []
    try:
        with service_client() as service:
            sampler = service.create_sampling_client(base_model="tinker-ref/tiny-bytes").result()
            params = types.SamplingParams(max_tokens=4, temperature=1.0, seed=5)
            response = sampler.sample(types.ModelInput.from_ints([5, 6, 7]), 1, params).result()
            tokens = [int(t) for t in response.sequences[0].tokens]
            raise ScriptFailed("the training script failed after sampling")
    except ScriptFailed:
        pass
    return {"tokens": tokens}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
