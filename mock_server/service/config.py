"""`ServerConfig`: every knob of the mock server, in one dataclass passed to the service.

Both front ends (HTTP now, gRPC later) and the CLI build one of these; nothing reads globals.
`client_config()` is what `POST /api/v1/client/config` answers: the official SDK's defaults
with the operator's overrides on top (tests use them to force chunking, zstd, server-side
custom losses or JWT auth).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mock_server.faults import FaultPlan

# The SDK 0.38 defaults of `ClientConfigResponse` (spec WIRE-3). The mock answers them
# explicitly so a reader of the wire sees what the client will do.
CLIENT_CONFIG_DEFAULTS: dict[str, Any] = {
    "pjwt_auth_enabled": False,
    "credential_default_source": "api_key",
    "sample_dispatch_bytes_semaphore_size": 10_485_760,
    "inflight_response_bytes_semaphore_size": 52_428_800,
    "parallel_fwdbwd_chunks": True,
    "proto_compress_fwdbwd": False,
    "fwdbwd_max_chunk_len": 1024,
    "fwdbwd_max_chunk_bytes_count": 5_000_000,
    "fwdbwd_dispatch_bytes_semaphore_size": 50_000_000,
    "billing_exception_max_pause_duration_sec": 3600,
    "sample_no_retries": False,
    "sample_enable_stuck_detection": True,
    "sample_max_concurrent_requests": 2000,
    "use_pyqwest_transport": True,
    "sample_use_retrieve_futures": False,
    "custom_loss_server_side": False,
    "sample_join_sampling_session": False,
}

# `client/dynamic_config` defaults (spec WIRE-1); cancellation stays off like production.
DYNAMIC_CONFIG_DEFAULTS: dict[str, Any] = {
    "refresh_interval_sec": 300,
    "sample_cancel_enabled": False,
    "sample_cancel_max_batch_size": 64,
}


class ConfigError(ValueError):
    """A server configuration value is unusable (raised at start-up, never per request)."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # HTTP listen address
    port: int = 8080  # HTTP listen port; 0 picks a free one
    grpc_port: int | None = None  # gRPC listen port once that front end exists; None = off
    seed: int = 0  # server seed: base weights, ids, default LoRA and sample seeds derive from it
    data_dir: Path | None = None  # checkpoints live here; None = a temporary dir per process
    # Crash safety (service/journal.py): journal accepted ops under data_dir, replay on start.
    journal: bool = False
    # Overrides of CLIENT_CONFIG_DEFAULTS (e.g. {"fwdbwd_max_chunk_len": 2}).
    client_config_overrides: Mapping[str, Any] = field(default_factory=dict)
    dynamic_config_overrides: Mapping[str, Any] = field(default_factory=dict)
    api_keys_file: Path | None = None  # None = any `tml-` key; else only listed keys, own sessions
    long_poll_seconds: float = 30.0  # retrieve_future holds a pending future this long (< 45 s)
    result_grace_seconds: float = 300.0  # a result stays retrievable this long after 1st retrieval
    result_ttl_seconds: float = 3600.0  # an unretrieved finished result is dropped after this
    seq_gap_timeout_seconds: float = 60.0  # buffered ops behind a missing seq_id fail after this
    dedupe_window: int = 4096  # per model: how many consumed seq_ids are remembered for retries
    # A session with no heartbeat and no use for this long expires; its models are freed.
    session_idle_seconds: float = 3600.0
    # ... for this long, its client looks gone (the SDKs heartbeat every 10 s and poll their
    # futures): its queued engine work is cancelled so it cannot hold others up (expiry.py).
    session_abandon_seconds: float = 60.0
    # Ops without an outcome, server-wide; past it new ops answer 429 + Retry-After (bounded
    # queues), except a model's next seq_id, which can always run and may unblock others.
    max_pending_ops: int = 4096
    max_body_bytes: int = 64 * 1024 * 1024  # request body cap, compressed (413 above)
    max_decompressed_bytes: int = 256 * 1024 * 1024  # cap after zstd decompression (413 above)
    # Results larger than this are announced with `complete_metadata` first (when allowed).
    metadata_threshold_bytes: int = 4 * 1024 * 1024
    # A sample pauses (between two tokens) as soon as another session's op waits for its engine
    # worker, and after this long at the latest; other sessions take their turns in between
    # (service/pool.py, "Slices"). Results do not depend on it.
    sample_slice_seconds: float = 0.05
    # Engine workers (service/pool.py); None: one per CPU this process may use. More workers than
    # cores only contend; one model's ops never overlap regardless. With engine processes the
    # pool has one worker per process instead, and this is not used.
    worker_threads: int | None = None
    # Engine processes (mock_server/engine/processes.py): 0 runs engine work in this process's
    # threads, where the GIL caps a small model's throughput near one core; N > 0 runs it in N
    # child processes (each model in one of them) with the same results. The CLI's default is
    # one per core when there are at least two.
    engine_processes: int = 0
    jwt_ttl_seconds: int = 3600  # lifetime of tokens from /auth/token (pjwt_auth_enabled)
    max_request_records: int = 10_000  # request records kept for tests / conformance (FIFO)
    # Keep forward/backward token ids and loss_fn_inputs *values* in the request record (tests
    # that check what a client sent, e.g. custom-loss weights per datum); off: shapes only.
    record_tensors: bool = False
    # Scripted faults (mock_server/faults.py); None = never inject. Only an explicit flag sets it.
    fault_plan: FaultPlan | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.client_config_overrides) - set(CLIENT_CONFIG_DEFAULTS))
        if unknown:
            raise ConfigError(
                f"client config: unknown key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(CLIENT_CONFIG_DEFAULTS))}"
            )
        for key, value in self.client_config_overrides.items():
            default = CLIENT_CONFIG_DEFAULTS[key]
            if type(value) is not type(default):  # exact: True is not an int here
                raise ConfigError(
                    f"client config {key!r}: expected {type(default).__name__}, "
                    f"got {type(value).__name__} {value!r}"
                )
        if not 0 < self.long_poll_seconds < 45:
            raise ConfigError(
                f"long_poll_seconds must be in (0, 45): the SDK times a poll out at 45 s, "
                f"got {self.long_poll_seconds}"
            )
        for name in (
            "result_grace_seconds",
            "result_ttl_seconds",
            "seq_gap_timeout_seconds",
            "session_idle_seconds",
            "session_abandon_seconds",
            "sample_slice_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.journal and self.data_dir is None:
            raise ConfigError("journal needs a data_dir to keep it in")
        if self.engine_processes < 0:
            raise ConfigError(f"engine_processes must be >= 0, got {self.engine_processes}")
        if self.worker_threads is not None and self.worker_threads < 1:
            raise ConfigError(f"worker_threads must be >= 1, got {self.worker_threads}")

    def client_config(self) -> dict[str, Any]:
        return {**CLIENT_CONFIG_DEFAULTS, **self.client_config_overrides}

    def dynamic_config(self) -> dict[str, Any]:
        return {**DYNAMIC_CONFIG_DEFAULTS, **self.dynamic_config_overrides}
