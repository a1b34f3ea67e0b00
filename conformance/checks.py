"""Expected vs got: step results, the trained state, and wire observations.

Everything is compared by one rule set (`compare`), so every failure message has the same
shape — `<where>: expected <value>, got <value>`:

- objects: the same keys (a missing or an extra key is a failure), values compared recursively;
- lists: the same length, items compared in order;
- numbers: ints against ints exactly, otherwise |got - expected| <= abs + rel·|expected|;
- `{"error": {"kind": [...]}}`: got must be an error whose kind is one of those;
- `{"pattern": REGEX}` (paths, ids that differ per run): got must be a string matching it;
- anything else: equality.

Wire observations are values computed from the mock's per-case request record (`observe`); the
reference run stores them as expectations, every other run is compared against them. A step's
requests are found in the record itself (`step_requests`): seq_ids in order, each phase taking
the requests of its kind until they carried the step's datums — whatever the SDK's chunking or
endpoint for an op, and never by arrival order. Faults are addressed before any request exists,
so they use the seq_ids the case's chunking implies (`seq_ranges`, `fault_seq_id`): an SDK that
chunks otherwise does not claim the `chunking` feature, and cases that chunk are skipped for it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from conformance.cases import Case

DEFAULT_TOLERANCE = {"abs": 1e-5, "rel": 1e-5}
DEFAULT_CHUNK_LEN = 1024  # client/config fwdbwd_max_chunk_len, spec WIRE-3
# Training ops, by endpoint name: the HTTP path after /api/v1/, or the gRPC method in snake case
# (records of both front ends then read the same).
TRAINING_ENDPOINTS = frozenset(
    {
        "forward_backward",
        "forward",
        "optim_step",
        "save_weights",
        "load_weights",
        "save_weights_for_sampler",
    }
)
_SHOWN = 160  # characters of a value shown in a message


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def compare(where: str, expected: Any, got: Any, tol: Mapping[str, float]) -> list[str]:
    if isinstance(expected, dict) and set(expected) == {"pattern"}:
        if isinstance(got, str) and re.fullmatch(expected["pattern"], got):
            return []
        return [f"{where}: expected a string matching {expected['pattern']!r}, got {_show(got)}"]
    if isinstance(expected, dict) and set(expected) == {"error"}:
        kinds = expected["error"]["kind"]
        if isinstance(got, dict) and isinstance(got.get("error"), dict):
            if got["error"].get("kind") in kinds:
                return []
            return [f"{where}: expected an error of kind {kinds}, got {_show(got['error'])}"]
        return [f"{where}: expected an error of kind {kinds}, got a result {_show(got)}"]
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return [f"{where}: expected an object, got {_show(got)}"]
        if "error" in got and "error" not in expected:
            return [f"{where}: expected a result, got an error {_show(got['error'])}"]
        failures = [
            f"{where}.{key}: expected {_show(expected[key])}, got nothing (missing)"
            for key in sorted(set(expected) - set(got))
        ]
        failures += [
            f"{where}.{key}: expected nothing (no such key), got {_show(got[key])}"
            for key in sorted(set(got) - set(expected))
        ]
        for key in sorted(set(expected) & set(got)):
            failures += compare(f"{where}.{key}", expected[key], got[key], tol)
        return failures
    if isinstance(expected, list):
        if not isinstance(got, list):
            return [f"{where}: expected a list {_show(expected)}, got {_show(got)}"]
        if len(got) != len(expected):
            return [
                f"{where}: expected {len(expected)} items {_show(expected)}, "
                f"got {len(got)} {_show(got)}"
            ]
        failures = []
        for index, (e, g) in enumerate(zip(expected, got, strict=True)):
            failures += compare(f"{where}[{index}]", e, g, tol)
            if len(failures) >= 5:  # enough to diagnose; the rest is noise
                return [*failures, f"{where}: further differences not shown"]
        return failures
    if _number(expected):
        if not _number(got):
            return [f"{where}: expected the number {expected!r}, got {_show(got)}"]
        if isinstance(expected, int) and isinstance(got, int):
            ok = expected == got
        else:
            ok = math.isclose(got, expected, rel_tol=tol["rel"], abs_tol=tol["abs"])
        return [] if ok else [f"{where}: expected {expected!r}, got {got!r}"]
    return [] if expected == got else [f"{where}: expected {_show(expected)}, got {_show(got)}"]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----- seq_id bookkeeping -----


def _chunks(case: Case, data: str) -> int:
    limit = case.get("server", {}).get("client_config", {}).get("fwdbwd_max_chunk_len")
    return math.ceil(len(case["data"][data]) / (limit or DEFAULT_CHUNK_LEN))


def seq_ranges(case: Case) -> dict[str, range]:
    """The training seq_ids each step consumes, numbered from 1 like the official SDK."""
    ranges, next_id = {}, 1
    for step in case["steps"]:
        op = step["op"]
        if op in ("forward", "forward_backward"):
            count = _chunks(case, step["data"])
        elif op == "forward_backward_custom":
            count = 2 * _chunks(case, step["data"])  # k forward + k backward chunks
        elif op == "await":
            count = 0
        else:  # optim_step, save_state, load_state, sample (its weight snapshot)
            count = 1
        ranges[step["id"]] = range(next_id, next_id + count)
        next_id += count
    return ranges


def fault_seq_id(case: Case, fault: Mapping[str, Any]) -> int:
    """The seq_id of the op a step-addressed fault hits: the step's request (chunk `chunk`,
    default 0) or, for a custom-loss step, that of its `phase` (forward or backward)."""
    ids = list(seq_ranges(case)[fault["step"]])
    phase = fault.get("phase")
    if phase is not None:
        step = next(s for s in case["steps"] if s["id"] == fault["step"])
        if step["op"] != "forward_backward_custom":
            raise ValueError(f"{case['name']}: phase {phase!r} needs a custom-loss step")
        half = len(ids) // 2
        ids = ids[:half] if phase == "forward" else ids[half:]
    chunk = int(fault.get("chunk", 0))
    if not 0 <= chunk < len(ids):
        raise ValueError(f"{case['name']}: step {fault['step']} has {len(ids)} request(s)")
    return ids[chunk]


# gRPC's one-round-trip RPCs submit the same ops as these (spec WIRE-22).
_RUN_RPCS = {"RunForwardBackward": "ForwardBackward", "RunOptimStep": "OptimStep"}


def endpoint_name(path: str) -> str:
    """ "/api/v1/forward_backward", "/tinker_ref.training.v1.TrainingService/ForwardBackward"
    and ".../RunForwardBackward" all -> "forward_backward"."""
    if path.startswith("/api/v1/"):
        return path.removeprefix("/api/v1/")
    method = path.rsplit("/", 1)[-1]
    method = _RUN_RPCS.get(method, method)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower()


def training_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        r
        for r in records
        if endpoint_name(r["endpoint"]) in TRAINING_ENDPOINTS and r["seq_id"] is not None
    ]


def model_id(records: Sequence[Mapping[str, Any]]) -> str | None:
    for record in training_records(records):
        body = record.get("body")
        if isinstance(body, dict) and isinstance(body.get("model_id"), str):
            return str(body["model_id"])
    return None


def _comparable(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    # Transport details may differ between resends of one op; the op itself may not.
    return {k: v for k, v in body.items() if k not in ("body_bytes", "content_encoding")}


def _datums(record: Mapping[str, Any]) -> int:
    body = record.get("body")
    return int(body.get("num_datums") or 0) if isinstance(body, dict) else 0


def _is_forward_only(record: Mapping[str, Any]) -> bool:
    body = record.get("body")
    return bool(body.get("forward_only")) if isinstance(body, dict) else False


def _forward_phase(record: Mapping[str, Any]) -> bool:
    return endpoint_name(record["endpoint"]) in ("forward", "forward_backward") and (
        _is_forward_only(record)
    )


def _backward_phase(record: Mapping[str, Any]) -> bool:
    return endpoint_name(record["endpoint"]) == "forward_backward" and not _is_forward_only(record)


def _one_of(endpoint: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda record: endpoint_name(record["endpoint"]) == endpoint


# Each op's phases: which recorded requests belong to it, and whether they carry datums (then
# the phase runs until it has carried the step's datums, in as many chunks as the SDK chose).
_PHASES: dict[str, list[tuple[Callable[[Mapping[str, Any]], bool], bool]]] = {
    "forward": [(_forward_phase, True)],
    "forward_backward": [(_backward_phase, True)],
    "forward_backward_custom": [(_forward_phase, True), (_backward_phase, True)],
    "optim_step": [(_one_of("optim_step"), False)],
    "save_state": [(_one_of("save_weights"), False)],
    "load_state": [(_one_of("load_weights"), False)],
    "sample": [(_one_of("save_weights_for_sampler"), False)],
    "await": [],
}


def step_requests(
    case: Case, records: Sequence[Mapping[str, Any]]
) -> dict[str, list[list[Mapping[str, Any] | None]]]:
    """The training requests the server recorded for each step, per phase (a custom-loss step
    has a forward and a backward phase), in seq_id order — read from the record, not from the
    reference's chunking, so an SDK that chunks otherwise is judged on what it sent.

    Each seq_id counts once (its accepted request when there is one, else None: refused). Steps
    are matched in order: a phase takes the next requests of its kind until they carried the
    step's datums; a step whose requests never came (refused client-side) gets none.
    """
    first: dict[int, Mapping[str, Any]] = {}
    accepted: dict[int, Mapping[str, Any]] = {}
    for record in training_records(records):
        first.setdefault(record["seq_id"], record)
        if 200 <= (record["status"] or 0) < 300:
            accepted.setdefault(record["seq_id"], record)
    queue = [first[seq_id] for seq_id in sorted(first)]
    position = 0
    found: dict[str, list[list[Mapping[str, Any] | None]]] = {}
    for step in case["steps"]:
        datums = len(case["data"][step["data"]]) if "data" in step else 0
        phases: list[list[Mapping[str, Any] | None]] = []
        for belongs, carries_datums in _PHASES[step["op"]]:
            taken: list[Mapping[str, Any] | None] = []
            carried = 0
            while position < len(queue) and belongs(queue[position]):
                record = queue[position]
                taken.append(accepted.get(record["seq_id"]))
                carried += _datums(record)
                position += 1
                if not carries_datums or carried >= datums:
                    break
            phases.append(taken)
        found[step["id"]] = phases
    return found


# ----- observations -----


def observe(check: Mapping[str, Any], case: Case, records: Sequence[Mapping[str, Any]]) -> Any:
    """The check's value from the record; a record too odd to read yields a string saying so
    (which then fails the comparison with that message instead of stopping the run)."""
    try:
        return _observe(check, case, records)
    except (KeyError, TypeError, IndexError) as exc:
        return f"unobservable: the recorded requests lack {type(exc).__name__} {exc}"


def _observe(check: Mapping[str, Any], case: Case, records: Sequence[Mapping[str, Any]]) -> Any:
    kind = check["check"]
    if kind == "seq_ids":
        by_id: dict[int, list[Any]] = {}
        for record in training_records(records):
            if 200 <= (record["status"] or 0) < 300:
                by_id.setdefault(record["seq_id"], []).append(_comparable(record["body"]))
        return {
            "seq_ids": sorted(by_id),
            # A resend (retry) of one op must carry the same op: equal decoded bodies.
            "resends_agree": all(all(b == bodies[0] for b in bodies) for bodies in by_id.values()),
        }
    if kind == "fault_retried":
        faults: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            fault = (record.get("extra") or {}).get("fault")
            if fault is None:
                continue
            later = [r for r in records[index + 1 :] if r["endpoint"] == record["endpoint"]]
            answered = [
                r
                for r in later
                if 200 <= (r["status"] or 0) < 300 and "fault" not in (r.get("extra") or {})
            ]
            item: dict[str, Any] = {
                "endpoint": endpoint_name(record["endpoint"]),
                "fault": fault,
                "retried": bool(answered),
            }
            if record["seq_id"] is not None:  # the op was read before the fault
                # Any later success with that seq_id: chunks of one phase may be POSTed
                # concurrently, so the next success on the endpoint can be another chunk.
                item["retry_same_seq_id"] = any(r["seq_id"] == record["seq_id"] for r in answered)
            faults.append(item)
        return faults
    phases = step_requests(case, records)[check["step"]]
    if kind == "chunks":
        return [None if b is None else b["body"]["num_datums"] for phase in phases for b in phase]
    forward, backward = [*phases, [], []][:2]
    if kind == "forward_phase_inputs":
        return [
            None
            if r is None
            else {
                "forward_only": r["body"]["forward_only"],
                "loss_fn": r["body"]["loss_fn"],
                "loss_fn_inputs": sorted(
                    {k for d in r["body"]["data"] for k in d["loss_fn_inputs"]}
                ),
            }
            for r in forward
        ]
    if kind in ("backward_weights", "sparse_weights"):
        observed: list[Any] = []
        for r in backward:
            if r is None:
                observed.append(None)
                continue
            for datum in r["body"]["data"]:
                weights = datum["loss_fn_inputs"].get("weights", {})
                observed.append(weights.get("values" if kind == "backward_weights" else "sparse"))
        return observed
    raise ValueError(f"unknown wire check {kind!r}")


def wire_key(check: Mapping[str, Any]) -> str:
    return str(check["check"]) + (f":{check['step']}" if "step" in check else "")
