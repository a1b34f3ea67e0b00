"""Reference side of the custom-loss differential test; runs INSIDE an official SDK venv.

It uses only the SDK's own code, offline: `trace_loss` (torch.fx tracing + client-side checks),
`encode_graph` and the request model that `ServiceClient.create_custom_loss` POSTs, then
`check_loss_inputs` and `run_loss_handle`, the client-side path of `forward_backward_custom`.
It does not import tinker-ref (that lives in another venv).

Protocol: one JSON object on stdin, one on stdout.
  in:  {"cases": [{"loss": <name in LOSSES>, "run": bool,
                   "data": [{"logprobs": TENSOR, "inputs": {key: TENSOR}}]}]}
  out: {"sdk_version": str, "torch_version": str,
        "results": [{"loss": name, "request": <create_custom_loss body without session fields>,
                     "total_loss": HEX, "metrics": {key: HEX},
                     "grads": [TENSOR per datum]}]}   # the last three only when "run"
  TENSOR = {"dtype": "float32" | "int64", "shape": [..], "values": [..]} (row-major; floats as
  float.hex strings, so values cross the pipe bit for bit); HEX = float.hex of a Python float.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import tinker
import torch
import torch.nn.functional as F
from tinker import types
from tinker._compat import model_dump
from tinker.lib.public_interfaces.custom_loss import (
    check_loss_inputs,
    encode_graph,
    run_loss_handle,
    trace_loss,
)

# ----- realistic losses (per datum), with their input ranks -----


def neg_ll(logprobs, weights):
    loss = -(logprobs * weights).sum()
    return loss, {"custom/neg_ll:sum": loss, "custom/tokens:mean": weights.sum()}


def dpo(logprobs, ref_logprobs, weights, sign):
    # One side of a preference pair: sign = +1 chosen, -1 rejected; beta = 0.1.
    margin = sign * ((logprobs - ref_logprobs) * weights).sum()
    loss = -F.logsigmoid(0.1 * margin)
    return loss, {
        "custom/dpo/margin:mean": margin,
        "custom/dpo/accuracy:mean": (margin > 0).float(),
    }


def kl_to_target(logprobs, target_logits, weights):
    # logprobs [T, K]: the learner's logprobs of K candidates; target_logits [T, K]; weights [T]
    target = F.log_softmax(target_logits, dim=-1)
    learner = torch.log_softmax(logprobs, -1)
    per_token = (target.exp() * (target - learner)).sum(-1)  # [T]
    loss = (per_token * weights).sum()
    entropy = -(F.softmax(logprobs, dim=-1) * learner).sum(-1).mean()
    return loss, {
        "custom/kl:mean": loss / weights.sum().clamp(min=1.0),
        "custom/entropy:mean": entropy,
    }


def ppo_clip(logprobs, old_logprobs, advantages, mask):
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = torch.clamp(ratio, 0.8, 1.2)
    objective = torch.minimum(ratio * advantages, clipped * advantages)
    objective = torch.where(mask > 0, objective, torch.zeros_like(objective))
    loss = -objective.sum() / math.sqrt(logprobs.shape[0])
    clipfrac = ((ratio - clipped).abs() > 0).float().mul(mask).sum()
    return loss, {
        "custom/ppo/clipfrac:sum": clipfrac,
        "custom/ppo/ratio_max:mean": ratio.max(),
        "custom/tokens:sum": mask.sum(),
    }


def gather_ce(logprobs, target_index, weights):
    # logprobs [T, K]; target_index [T] int64 picks one candidate per token
    picked = logprobs.gather(-1, target_index.unsqueeze(-1)).squeeze(-1)
    return -(picked * weights).sum(), {"custom/picked:mean": picked.mean()}


# ----- losses the SDK accepts on the client but a server must refuse -----


def exp_out(logprobs, weights):
    return torch.exp(logprobs, out=weights).sum(), {}  # writes into an input


def relu_inplace(logprobs, weights):
    return F.relu(logprobs * weights, inplace=True).sum(), {}


def int_power(logprobs, weights):
    return logprobs.sum() * (weights.shape[0] ** 100_000), {}  # a 100k-digit Python int


def draws_noise(logprobs, weights):
    return (logprobs * torch.rand_like(weights)).sum(), {}  # nondeterministic


def reads_uninitialised(logprobs, weights):
    return (logprobs + torch.empty_like(weights)).sum(), {}  # leaks whatever memory held


def int_metric(logprobs, weights):
    return (logprobs * weights).sum(), {"custom/tokens:sum": logprobs.shape[0]}  # not a tensor


LOSSES: dict[str, tuple[Any, dict[str, int]]] = {
    "neg_ll": (neg_ll, {"logprobs": 1, "weights": 1}),
    "dpo": (dpo, {"logprobs": 1, "ref_logprobs": 1, "weights": 1, "sign": 0}),
    "kl_to_target": (kl_to_target, {"logprobs": 2, "target_logits": 2, "weights": 1}),
    "ppo_clip": (ppo_clip, {"logprobs": 1, "old_logprobs": 1, "advantages": 1, "mask": 1}),
    "gather_ce": (gather_ce, {"logprobs": 2, "target_index": 1, "weights": 1}),
    "exp_out": (exp_out, {"logprobs": 1, "weights": 1}),
    "relu_inplace": (relu_inplace, {"logprobs": 1, "weights": 1}),
    "int_power": (int_power, {"logprobs": 1, "weights": 1}),
    "draws_noise": (draws_noise, {"logprobs": 1, "weights": 1}),
    "reads_uninitialised": (reads_uninitialised, {"logprobs": 1, "weights": 1}),
    "int_metric": (int_metric, {"logprobs": 1, "weights": 1}),
}

_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def decode_tensor(encoded: dict[str, Any]) -> torch.Tensor:
    dtype = _DTYPES[encoded["dtype"]]
    values = encoded["values"]
    if dtype.is_floating_point:
        values = [float.fromhex(v) for v in values]
    return torch.tensor(values, dtype=dtype).reshape(encoded["shape"])


def encode_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    values = tensor.detach().reshape(-1).tolist()
    if tensor.dtype.is_floating_point:
        values = [float(v).hex() for v in values]
    dtype = {torch.float32: "float32", torch.int64: "int64"}[tensor.dtype]
    return {"dtype": dtype, "shape": list(tensor.shape), "values": values}


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    fn, ranks = LOSSES[case["loss"]]
    handle = trace_loss(fn, ranks, session_id="offline")
    request = types.CreateCustomLossRequest(
        session_id="offline",
        custom_loss_seq_id=0,
        name=handle.name,
        inputs=list(handle.inputs),
        graph=encode_graph(handle),
    )
    # The exact body the SDK POSTs (resources/service.py), minus the session bookkeeping.
    body = model_dump(request, exclude_unset=False, exclude_none=True, mode="json")
    result: dict[str, Any] = {
        "loss": case["loss"],
        "request": {key: body[key] for key in ("name", "inputs", "graph")},
    }
    if not case.get("run", True):
        return result
    data, logprobs_list = [], []
    for datum in case["data"]:
        logprobs = decode_tensor(datum["logprobs"]).requires_grad_(True)
        inputs = {key: decode_tensor(value) for key, value in datum["inputs"].items()}
        target_tokens = torch.zeros(logprobs.shape, dtype=torch.int64)
        loss_fn_inputs = {"target_tokens": target_tokens, **inputs}
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(list(range(logprobs.shape[0]))),
                loss_fn_inputs={
                    key: types.TensorData.from_torch(value) for key, value in loss_fn_inputs.items()
                },
            )
        )
        logprobs_list.append(logprobs)
    check_loss_inputs(handle, data)
    total, metrics = run_loss_handle(handle, data, logprobs_list)
    total.backward()
    result["total_loss"] = float(total.detach()).hex()
    result["metrics"] = {key: float(value).hex() for key, value in metrics.items()}
    result["grads"] = [encode_tensor(lp.grad) for lp in logprobs_list]
    return result


def main() -> None:
    request = json.load(sys.stdin)
    results = [run_case(case) for case in request["cases"]]
    json.dump(
        {
            "sdk_version": tinker.__version__,
            "torch_version": torch.__version__,
            "results": results,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
