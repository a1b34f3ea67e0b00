"""tinker-ref: a reference client for custom-loss training on the Tinker API.

    from tinker_ref import ServiceClient, types

    service = ServiceClient(base_url="http://127.0.0.1:8080", api_key="tml-dev")
    training = service.create_lora_training_client("Qwen/Qwen3-8B", rank=8)
    result = training.forward_backward_custom(data, loss_fn).result()
    training.optim_step(types.AdamParams(learning_rate=1e-4)).result()

This package holds the client and everything client and server share: the public types
(`tinker_ref.types`), the wire codecs (`tinker_ref.codec`) and the error tree
(`tinker_ref.errors`). The client never imports `mock_server`; the one exception is the
opt-in convenience module `tinker_ref.mock`, which loads the mock server only when its
`serve()` is called (it is not imported here).
"""

__version__ = "0.1.0"  # before the imports below: the transports read it

from tinker_ref import errors, types
from tinker_ref.futures import APIFuture
from tinker_ref.logs import setup_logging
from tinker_ref.sampling_client import SamplingClient
from tinker_ref.service_client import ServiceClient
from tinker_ref.training_client import TrainingClient

setup_logging()  # `TINKER_LOG=debug|info`, as the official SDK reads it at import

__all__ = [
    "APIFuture",
    "SamplingClient",
    "ServiceClient",
    "TrainingClient",
    "__version__",
    "errors",
    "types",
]
