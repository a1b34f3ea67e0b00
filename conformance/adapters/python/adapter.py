"""Conformance adapter for Python SDKs with the official API: `tinker` (any release), `tinker_ref`.

    python adapter.py --sdk tinker                       # inside an official-SDK virtualenv
    python adapter.py --sdk tinker_ref --transport http  # the reference client
    python adapter.py --sdk tinker_ref --transport grpc

Speaks conformance/PROTOCOL.md on stdin/stdout (stdout carries protocol lines only; anything
the SDK prints is moved to stderr). Each case runs on its own thread with its own ServiceClient,
which sends `X-Conformance-Case: <case name>` on every request so the mock can record the case's
traffic. Calls that return a client in one SDK version and a future of it in another are
resolved the same way. Standard library, torch and the SDK only (this file also runs inside
official-SDK virtualenvs, where neither tinker_ref nor the runner is installed).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import catalogue
import torch

PROTOCOL_VERSION = 1
CASE_HEADER = "X-Conformance-Case"
# loss_fn_inputs keys whose plain-list dtype every SDK infers (int64 for target_tokens).
_LIST_KEYS = frozenset({"target_tokens", "weights", "advantages", "logprobs"})
Hook = Callable[[Any], None]


class Skip(Exception):
    """The case needs something this SDK does not offer (reported as `skipped`)."""


def resolve(value: Any) -> Any:
    """A client from a call that returns either the client or a future of it."""
    result = getattr(value, "result", None)
    return result() if callable(result) else value


class Adapter:
    def __init__(self, sdk_name: str, transport: str, hooks: Mapping[str, Hook] | None = None):
        self.sdk = importlib.import_module(sdk_name)
        self.types = self.sdk.types
        self.sdk_name, self.transport = sdk_name, transport
        self.version = str(getattr(self.sdk, "__version__", "unknown"))
        self.hooks = dict(hooks or {})  # test-only sabotage points (tests/conformance)

    # ----- clients -----

    def service_client(self, case: str, server: Mapping[str, Any], api_key: str) -> Any:
        header = {CASE_HEADER: case}
        if self.sdk_name == "tinker_ref":
            from case_transport import tinker_ref_client

            return tinker_ref_client(self.transport, server, api_key, header)
        if self.transport != "http":
            raise Skip(f"the official SDK speaks HTTP only, not {self.transport}")
        # 0.38 renamed the headers argument; older releases pass default_headers through.
        major_minor = tuple(int(p) for p in self.version.split(".")[:2])
        key = "default_headers_overrides" if major_minor >= (0, 38) else "default_headers"
        return self.sdk.ServiceClient(base_url=server["http"], api_key=api_key, **{key: header})

    # ----- data -----

    def datum(self, spec: Mapping[str, Any]) -> Any:
        inputs: dict[str, Any] = {}
        for key, value in spec["loss_fn_inputs"].items():
            dtype = torch.int64 if key == "target_tokens" else torch.float32
            tensor = torch.tensor(value, dtype=dtype)
            # 1-D lists under well-known keys go as lists (every SDK version types them by key);
            # 2-D go as torch tensors, which 0.38 sends as sparse CSR when that is smaller.
            inputs[key] = value if tensor.dim() == 1 and key in _LIST_KEYS else tensor
        return self.types.Datum(
            model_input=self.types.ModelInput.from_ints(spec["model_input"]),
            loss_fn_inputs=inputs,
        )

    # ----- steps -----

    def run_case(self, message: Mapping[str, Any]) -> dict[str, Any]:
        case = message["case"]
        client = self.service_client(case["name"], message["server"], message["api_key"])
        try:
            return self._steps(client, case)
        finally:
            close = getattr(client, "close", None)
            if callable(close):  # SDK <= 0.25 has none; 0.38 wants the session's end status
                needs_status = "status" in inspect.signature(close).parameters
                close(*(("success",) if needs_status else ()))

    def _steps(self, client: Any, case: Mapping[str, Any]) -> dict[str, Any]:
        model = case["model"]
        training = resolve(
            client.create_lora_training_client(
                base_model=model["base_model"], rank=model["rank"], seed=model["seed"]
            )
        )
        datasets = {name: [self.datum(d) for d in data] for name, data in case["data"].items()}
        results: dict[str, Any] = {}
        deferred: dict[str, tuple[Any, Callable[[Any], Any]]] = {}
        state: dict[str, Any] = {"training": training, "paths": {}}
        for step in case["steps"]:
            if step["op"] == "await":
                for step_id in step["steps"]:
                    future, encode = deferred.pop(step_id)
                    results[step_id] = _outcome(future, encode)
                continue
            try:
                future, encode = self._submit(step, datasets, state)
            except (Skip, catalogue.UnknownLoss):
                raise
            except Exception as exc:  # a call the SDK refused before returning a future
                results[step["id"]] = {"error": _error(exc)}
                continue
            if step.get("defer"):
                deferred[step["id"]] = (future, encode)
            else:
                results[step["id"]] = _outcome(future, encode)
                if step["op"] == "save_state" and "path" in results[step["id"]]:
                    state["paths"][step["id"]] = results[step["id"]]["path"]
        for step_id, (future, encode) in deferred.items():  # deferred and never awaited
            results[step_id] = _outcome(future, encode)
        return results

    def _submit(
        self, step: Mapping[str, Any], datasets: Mapping[str, list[Any]], state: dict[str, Any]
    ) -> tuple[Any, Callable[[Any], Any]]:
        training, op = state["training"], step["op"]
        if op in ("forward", "forward_backward"):
            call = training.forward if op == "forward" else training.forward_backward
            config = step.get("loss_fn_config")
            args = (datasets[step["data"]], step["loss_fn"]) + ((config,) if config else ())
            return call(*args), self._encode_output
        if op == "forward_backward_custom":
            loss = catalogue.build(step["loss"])
            if "loss" in self.hooks:
                loss = self.hooks["loss"](loss)
            future = training.forward_backward_custom(datasets[step["data"]], loss)
            return future, self._encode_output
        if op == "optim_step":
            params = self.types.AdamParams(**step["adam"])
            return training.optim_step(params), lambda _: {}
        if op == "save_state":
            return training.save_state(step["name"]), lambda r: {"path": r.path}
        if op == "load_state":
            return training.load_state(state["paths"][step["from"]]), lambda _: {}
        if op == "sample":
            sampler = resolve(training.save_weights_and_get_sampling_client())
            params = self.types.SamplingParams(**step["sampling_params"])
            prompt = self.types.ModelInput.from_ints(step["prompt"])
            future = sampler.sample(
                prompt=prompt, num_samples=step["num_samples"], sampling_params=params
            )
            return future, _encode_samples
        raise Skip(f"unknown op {op!r}")

    def _encode_output(self, output: Any) -> dict[str, Any]:
        logprobs = []
        for item in output.loss_fn_outputs:
            tensor = item["logprobs"]
            logprobs.append(tensor.to_torch().tolist() if hasattr(tensor, "to_torch") else tensor)
        metrics = {str(k): _metric_value(v) for k, v in output.metrics.items()}
        if "metrics" in self.hooks:
            self.hooks["metrics"](metrics)
        return {"logprobs": logprobs, "metrics": metrics}


def _metric_value(value: Any) -> Any:
    """JSON numbers stay numbers; anything else is reported as what it is, not converted —
    the runner must see what the SDK returned (PROTOCOL.md, "Values")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {"non_number": type(value).__name__, "repr": repr(value)[:80]}
    return value


def _encode_samples(response: Any) -> dict[str, Any]:
    return {
        "sequences": [
            {
                "tokens": list(seq.tokens),
                "logprobs": None if seq.logprobs is None else list(seq.logprobs),
                "stop_reason": str(getattr(seq.stop_reason, "value", seq.stop_reason)),
            }
            for seq in response.sequences
        ]
    }


def _error(exc: BaseException) -> dict[str, Any]:
    # "server": the service refused it (an HTTP/gRPC status or a failed future); "client":
    # the SDK refused it itself. Both SDK families expose the status as `status_code`.
    server = hasattr(exc, "status_code") or type(exc).__name__ == "RequestFailedError"
    return {
        "kind": "server" if server else "client",
        "type": type(exc).__name__,
        "message": str(exc)[:500],
    }


def _outcome(future: Any, encode: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """The step's result, or the error its future raised."""
    try:
        return encode(resolve(future))
    except Exception as exc:
        return {"error": _error(exc)}


# ----- protocol -----


class Channel:
    """NDJSON out on the real stdout (the SDK's own prints go to stderr), one writer at a time."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def send(self, message: Mapping[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps(message) + "\n")
            self._out.flush()


def serve(adapter: Adapter, name: str, parallel: int) -> int:
    channel = Channel()
    hello = json.loads(sys.stdin.readline() or "{}")
    if hello.get("type") != "hello" or hello.get("protocol") != PROTOCOL_VERSION:
        channel.send({"type": "hello", "protocol": PROTOCOL_VERSION, "error": "bad handshake"})
        return 2
    channel.send(
        {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "adapter": {"name": name, "sdk": adapter.sdk_name, "sdk_version": adapter.version},
            "max_parallel": parallel,
        }
    )

    def run(message: Mapping[str, Any]) -> None:
        name = message["case"]["name"]
        try:
            steps = adapter.run_case(message)
            channel.send({"type": "result", "case": name, "status": "ok", "steps": steps})
        except (Skip, catalogue.UnknownLoss) as exc:
            channel.send({"type": "result", "case": name, "status": "skipped", "reason": str(exc)})
        except Exception:
            error = traceback.format_exc(limit=8)
            channel.send({"type": "result", "case": name, "status": "errored", "error": error})

    with ThreadPoolExecutor(parallel, thread_name_prefix="case") as pool:
        for line in sys.stdin:
            message = json.loads(line)
            if message.get("type") == "shutdown":
                break
            if message.get("type") == "run":
                pool.submit(run, message)
    return 0


def main(hooks: Mapping[str, Hook] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdk", choices=("tinker", "tinker_ref"), required=True)
    parser.add_argument("--transport", choices=("http", "grpc"), default="http")
    parser.add_argument("--parallel", type=int, default=4, help="cases run at once")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # deprecation chatter of older SDKs; stderr only anyway
    torch.set_num_threads(1)  # many cases at once on few cores; tiny tensors
    adapter = Adapter(args.sdk, args.transport, hooks)
    return serve(adapter, f"{args.sdk}-{args.transport}", args.parallel)


if __name__ == "__main__":
    sys.exit(main())
