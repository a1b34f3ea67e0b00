"""`MockServer`: an in-process mock with the helpers a test of a training loop wants.

    with mock_server.testing.serve(seed=0) as mock:
        os.environ.update(mock.environ())   # what the official SDK reads
        ...train with the unmodified SDK...
        assert mock.losses(model_id)[-1] < mock.losses(model_id)[0]

This is the public face of the mock for tests: the pytest plugin (`mock_server.pytest_plugin`,
fixtures `tinker_mock` / `tinker_mock_module` / `tinker_mock_session`) and
`tinker_ref.mock.serve` all hand out a `MockServer`. It wraps `mock_server.embedded.serve`
(server on a daemon thread, free loopback port) and reads the server's state on the server's
own loop, so a helper never races a request handler. It does not wait for in-flight training
ops: read a model's digest or history after the SDK call's `.result()`, as a test naturally
does.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from mock_server.embedded import EmbeddedServer
from mock_server.embedded import serve as serve_embedded
from mock_server.service import ServerConfig, TinkerService
from mock_server.service.state import Model

__all__ = ["DEFAULT_API_KEY", "MockServer", "serve"]

# The official SDK refuses keys without the `tml-` prefix before sending anything; the mock
# accepts any such key unless started with an api-keys file.
DEFAULT_API_KEY = "tml-tinker-ref-mock"
API_PREFIX = "/api/v1/"


@dataclasses.dataclass(frozen=True)
class MockServer:
    """A running mock: where it listens, and read-only views of what it received and holds."""

    embedded: EmbeddedServer  # the underlying server (config, service, loop) for white-box use
    api_key: str = DEFAULT_API_KEY

    @property
    def url(self) -> str:
        """Base URL, `http://127.0.0.1:PORT`: the SDK's `base_url` / `TINKER_BASE_URL`."""
        return self.embedded.url

    @property
    def grpc_target(self) -> str:
        """`127.0.0.1:PORT` of the gRPC front end, for `tinker_ref.ServiceClient(base_url=...,
        transport="grpc")`; only when started with `grpc=True` (AttributeError otherwise)."""
        return self.embedded.grpc_target

    @property
    def config(self) -> ServerConfig:
        return self.embedded.config

    def environ(self) -> dict[str, str]:
        """The environment variables that point the official SDK at this server."""
        return {"TINKER_BASE_URL": self.url, "TINKER_API_KEY": self.api_key}

    def requests(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """The request record in arrival order, as JSON-able dicts (`GET /_mock/requests`).

        `endpoint` filters by path: `"/api/v1/optim_step"`, or just `"optim_step"`.
        """
        wanted = None
        if endpoint is not None:
            wanted = endpoint if endpoint.startswith("/") else API_PREFIX + endpoint
        records = self._on_loop(lambda service: service.records.records())
        return [r.to_json() for r in records if wanted is None or r.endpoint == wanted]

    def model_ids(self) -> list[str]:
        """Ids of the training models created so far, in creation order."""
        return list(self._on_loop(lambda service: list(service.ctx.registry.models)))

    def weights_digest(self, model_id: str, include_optimizer: bool = False) -> str:
        """sha256 of a model's adapter weights (and Adam state): equal iff bit-identical."""

        def digest(service: TinkerService) -> str:
            training = _model(service, model_id).training
            if training is None:
                raise LookupError(f"model {model_id!r} has no weights: its creation failed")
            return training.digest(include_optimizer)

        return str(self._on_loop(digest))

    def history(self, model_id: str) -> list[dict[str, Any]]:
        """Completed training ops of a model in execution order: `{"op", "loss_fn", "metrics"}`
        with op `forward_backward`, `forward` (forward_only) or `optim_step`."""
        events = self._on_loop(lambda service: list(_model(service, model_id).history))
        return [dataclasses.asdict(event) for event in events]

    def losses(self, model_id: str) -> list[float]:
        """`loss:sum` of each training `forward_backward` of a model, in order.

        For a client-side custom loss (`forward_backward_custom` without an uploaded loss) the
        server only sees the surrogate pass, so this is the surrogate's sum, not your loss.
        """
        return [
            event["metrics"]["loss:sum"]
            for event in self.history(model_id)
            if event["op"] == "forward_backward" and "loss:sum" in event["metrics"]
        ]

    def optimizer_steps(self, model_id: str) -> int:
        """How many `optim_step`s changed the weights (skipped empty steps do not count)."""
        return sum(
            int(event["metrics"].get("optimizer_step:sum", 0))
            for event in self.history(model_id)
            if event["op"] == "optim_step"
        )

    def _on_loop(self, read: Any) -> Any:
        service = self.embedded.service
        return self.embedded.call(read, service)


def _model(service: TinkerService, model_id: str) -> Model:
    model = service.ctx.registry.models.get(model_id)
    if model is None:
        known = ", ".join(service.ctx.registry.models) or "none yet"
        raise LookupError(f"no model {model_id!r} (models: {known})")
    return model


@contextmanager
def serve(
    seed: int = 0,
    api_key: str | None = None,
    api_keys: Sequence[str] | None = None,
    **overrides: Any,
) -> Iterator[MockServer]:
    """Start a mock on a free loopback port for the `with` block.

    `overrides` are `ServerConfig` fields, or `grpc=True` to serve gRPC beside HTTP, e.g.
    `serve(seed=3, client_config_overrides={"fwdbwd_max_chunk_len": 2})`. `api_keys` admits only
    those keys, and a session only to the key that made it (`tinker-mock serve --api-keys FILE`,
    without the file); None admits any `tml-` key. `api_key` is the key `environ()` hands the
    SDK: by default the first of `api_keys`, else `DEFAULT_API_KEY`.
    """
    config = ServerConfig(port=0, seed=seed)
    with ExitStack() as stack:
        if api_keys is not None:
            keys = _key_list(api_keys, overrides)
            directory = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="tinker-mock-"))
            )
            keys_file = directory / "api-keys"
            keys_file.write_text("".join(f"{key}\n" for key in keys))
            config = dataclasses.replace(config, api_keys_file=keys_file)
            api_key = api_key or keys[0]
        embedded = stack.enter_context(serve_embedded(config, **overrides))
        yield MockServer(embedded, api_key or DEFAULT_API_KEY)


def _key_list(api_keys: Sequence[str], overrides: dict[str, Any]) -> list[str]:
    if isinstance(api_keys, str):
        raise TypeError(f"api_keys takes a list of keys, got the string {api_keys!r}")
    if "api_keys_file" in overrides:
        raise ValueError("give api_keys or api_keys_file, not both")
    keys = list(api_keys)
    # One key a line in the file the server reads, where `#` starts a comment.
    if not keys or any(not key or "#" in key or len(key.split()) != 1 for key in keys):
        raise ValueError(f"api_keys: expected keys without spaces or '#', got {keys!r}")
    return keys
