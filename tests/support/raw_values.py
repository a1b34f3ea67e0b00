"""Raw tensor-like values (a list, a numpy array, a torch tensor) built from a JSON description,
for the codec tests that feed the same raw input to the official SDK's `Datum` conversion
(`official_codec_driver.py`, which imports this by its bare name inside an SDK venv) and to
tinker_ref's. Imports only numpy and the standard library (torch lazily, for torch inputs only).

Description: `{"kind": "list" | "numpy" | "torch", "value": nested list, "np_dtype",
"torch_dtype"}` (the dtypes where the kind needs them).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def raw_value_in(desc: dict[str, Any]) -> Any:
    """The value `desc` describes: the list itself, or an array / tensor of its dtype."""
    if desc["kind"] == "list":
        return desc["value"]
    array = np.array(desc["value"], dtype=np.float64).astype(desc["np_dtype"])
    if desc["kind"] == "numpy":
        return array
    import torch  # only torch inputs need it

    tensor = torch.from_numpy(np.ascontiguousarray(array.astype(np.float64)))
    return tensor.to(getattr(torch, desc["torch_dtype"]))
