"""Uploaded custom losses: validate the graph `create_custom_loss` sends, then run it per datum.

Owns (spec LOSS-15): decoding the
`CustomLossGraph` (format 1) that SDK 0.38 traces with `torch.fx`, the allow-list of operations
such a graph may call, and the interpreter that runs a compiled graph on ONE datum. Not owned:
storing losses per session, mapping `CustomLossError` to HTTP statuses, summing datums and
backpropagating (`TrainingModel.forward_backward_per_datum`, via `as_datum_loss()`).

Three modules, one job each: `allow_list` (what may be called, with which literals, and how each
call's size is bounded), `compiler` (request -> `CompiledCustomLoss`, everything checked before
any run), `interpreter` (running one datum, and the resource guard of that run). Pure torch and
Python, like the rest of the engine: the service stores and calls losses, nothing here knows it.

Security model. The graph is untrusted data; nothing in it ever becomes code.
- No eval/exec, imports or pickle. Call targets are looked up in `ALLOW_LIST`, whose literal
  names are resolved once at import; methods run as `torch.Tensor.<name>(receiver, ...)` and
  only on a tensor. `getattr` reads fixed (receiver type, attribute) pairs: no `.data`,
  `.grad`, storage or dunders.
- Nothing mutates: no in-place methods, `out=` is refused and `inplace=` must be a literal
  False, so a loss cannot write into logprobs, the datum's inputs or any server tensor.
- Literals are data: JSON scalars, strings an operation explicitly takes (einsum equations,
  `reduction=`, attribute names, "cpu"), slices, and dtypes/devices/layouts/memory formats from
  small lists (cpu only). No randomness, no uninitialised memory (`empty*` would leak server
  memory into metrics), no host conversions (`item`, `tolist`, `numpy`), no `backward`.
- Resources (`CustomLossLimits`): node count, nesting depth and literal count are capped when
  compiling. When running, every call whose result could outgrow its inputs is bounded BEFORE
  it runs (each allow-list family says how: the broadcast of its tensor arguments, computed in
  Python, or a dry run on the meta device, which computes shapes without memory), so no single
  allocation exceeds `max_tensor_elements`; every result is then checked (tensor size, elements
  made per datum, int magnitude, sequence and string length), and Python integer powers and
  sequence or string repetition are refused before they run. CPU time is bounded only by node
  count times per-call cost; a front end should bound request time.
"""

from mock_server.engine.custom_loss.compiler import compile_custom_loss
from mock_server.engine.custom_loss.interpreter import (
    CompiledCustomLoss,
    CustomLossError,
    CustomLossLimits,
)

__all__ = ["CompiledCustomLoss", "CustomLossError", "CustomLossLimits", "compile_custom_loss"]
