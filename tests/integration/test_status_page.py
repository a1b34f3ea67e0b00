"""The status page (`GET /`) in a real browser: headless Chromium (Debian's `chromium`) loads it
from a mock that trained a model, dumps the DOM it built and takes a screenshot. A second run
shows what a user of this project needs most: a custom-loss run whose real loss is labelled
as such beside the server's surrogate, a failed request with its status and field, and a
checkpoint.

DOM assertions check the numbers against the server's own record (`MockServer.losses`); the
screenshot (written under pytest's tmp dir, never committed) is decoded here and must contain
the curve's stroke colour inside the page, i.e. the browser really drew the SVG.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import urllib.error
import urllib.request
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch

import tinker_ref.mock
from mock_server.testing import MockServer
from tests.support.subprocesses import run_checked
from tests.support.training import datum
from tinker_ref import ServiceClient, types
from tinker_ref.codec import decode_forward_backward_output, encode_forward_backward_request

CHROMIUM = shutil.which("chromium")
STROKE = (0x1F, 0x6F, 0xEB)  # svg.loss-curve polyline stroke in status_page._STYLE
CUSTOM_STROKE = (0xD9, 0x48, 0x0F)  # polyline.custom: the client-reported custom loss
TEXT = b"the status page draws this loss curve"


def train(mock: MockServer, steps: int) -> str:
    with ServiceClient(base_url=mock.url, api_key=mock.api_key) as service:
        training = service.create_lora_training_client("tinker-ref/tiny-bytes", rank=4, seed=0)
        for _ in range(steps):
            training.forward_backward([datum(TEXT)], "cross_entropy").result()
            training.optim_step(types.AdamParams(learning_rate=2e-2)).result()
        # A forward-only pass is not training: it must not appear on the curve.
        training.forward([datum(TEXT)], "cross_entropy").result()
        return training.model_id


def fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, answer.headers["Content-Type"], answer.read().decode()


class Elements(HTMLParser):
    """Start tags with their attributes, and each element's direct text, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.tags
            if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def parse(markup: str) -> Elements:
    elements = Elements()
    elements.feed(markup)
    return elements


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    # --no-sandbox: tests run as root here, where Chromium's sandbox refuses to start. A fresh
    # profile per call: two Chromiums sharing one would lock each other out.
    command = [
        CHROMIUM or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return run_checked(command, timeout=120, tail=3000)


def require_chromium() -> None:
    """Skip where chromium is not installed; in CI, which must run the browser tests, fail."""
    if CHROMIUM is None:
        missing = "chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)


def dom_and_screenshot(url: str, tmp_path: Path, screenshot: Path, height: int) -> str:
    """The page at `url` as Chromium renders it (its DOM), after a 1400 x `height` screenshot
    of it is written to `screenshot`."""
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile-dom").stdout
    chromium(
        f"--window-size=1400,{height}", f"--screenshot={screenshot}", url, profile=tmp_path / "p2"
    )
    print(f"status page screenshot: {screenshot}")
    return dom


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and raw RGB(A) rows of an 8-bit non-interlaced PNG (what Chromium
    writes); no imaging library needed."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, header = 8, [], b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0) and color in (2, 6), (depth, color, interlace)
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):  # undo the PNG filter of this row
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line[::channels]) + bytes(line[1::channels]) + bytes(line[2::channels]))
        previous = line
    return width, height, rows


def stroke_pixels(path: Path, stroke: tuple[int, int, int] = STROKE) -> int:
    """Pixels within a small distance of the curve's stroke colour (anti-aliasing blends the
    edges, the line's core keeps the colour)."""
    width, _, rows = png_pixels(path)
    count = 0
    for row in rows:
        reds, greens, blues = row[:width], row[width : 2 * width], row[2 * width :]
        for r, g, b in zip(reds, greens, blues, strict=True):
            if abs(r - stroke[0]) + abs(g - stroke[1]) + abs(b - stroke[2]) < 60:
                count += 1
    return count


def test_status_page_is_html_with_models_and_needs_no_api_key() -> None:
    with tinker_ref.mock.serve(seed=0) as mock:
        status, content_type, empty = fetch(mock.url + "/")
        assert (status, content_type) == (200, "text/html; charset=utf-8")
        assert parse(empty).find("table", id="models")
        assert not [row for row in parse(empty).find("tr") if row]  # header rows only
        model_id = train(mock, steps=3)
        page = parse(fetch(mock.url + "/")[2])
    rows = page.find("tr", data_model_id=model_id)
    assert [row["data-steps"] for row in rows] == ["3"]
    (curve,) = page.find("svg", data_model_id=model_id)
    assert curve["data-points"] == "3"  # the forward-only pass is not on the curve
    assert page.find("meta", http_equiv="refresh", content="2")


def test_status_page_shows_nothing_when_sessions_are_private(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("tml-alice\n")
    with tinker_ref.mock.serve(seed=0, api_keys_file=keys, api_key="tml-alice") as mock:
        train(mock, steps=1)
        page = parse(fetch(mock.url + "/")[2])
    assert page.find("p", id="restricted")
    assert not page.find("table") and not page.find("svg")


def test_status_page_in_headless_chromium_shows_the_loss_curve(tmp_path: Path) -> None:
    require_chromium()
    screenshot = tmp_path / "status.png"
    with tinker_ref.mock.serve(seed=0) as mock:
        model_id = train(mock, steps=10)
        losses = mock.losses(model_id)
        url = mock.url + "/"
        dom = dom_and_screenshot(url, tmp_path, screenshot, height=500)
    page = parse(dom)
    (row,) = page.find("tr", data_model_id=model_id)
    assert row["data-steps"] == "10"
    (curve,) = page.find("svg", data_model_id=model_id)
    assert int(curve["data-points"]) == len(losses) == 10
    assert float(curve["data-first"]) == losses[0] > losses[-1] == float(curve["data-last"])
    (polyline,) = page.find("polyline")
    points = [tuple(map(float, p.split(","))) for p in polyline["points"].split()]
    assert len(points) == 10
    xs, ys = [x for x, _ in points], [y for _, y in points]
    assert xs == sorted(xs) and ys[0] < ys[-1]  # SVG y grows downwards: the loss fell
    assert "loss:sum (cross_entropy) · 10 passes" in "".join(page.text)
    assert page.find("tr", data_session_id=model_id.split(":")[0])
    width, height, _ = png_pixels(screenshot)
    assert (width, height) == (1400, 500)
    assert stroke_pixels(screenshot) > 150  # a ~300 px long, 1.5 px wide curve was drawn


# ----- a custom-loss run, a failing run and a checkpoint, over raw HTTP -----


class Raw:
    """The SDK's calls made by hand (urllib), so a test can send what a client MAY send: the
    custom loss in `X-Tinker-Custom-Loss`, or the SDK's `x-sdk-method` header."""

    def __init__(self, mock: MockServer) -> None:
        self.url, self.key = mock.url, mock.api_key

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"{self.url}/api/v1/{path}", data=body, headers={"X-API-Key": self.key, **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return int(answer.status), answer.read()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read()

    def json(self, path: str, body: dict[str, Any], expect: int = 200) -> Any:
        status, answer = self.post(
            path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        assert status == expect, (path, status, answer)
        return json.loads(answer)

    def result(self, request_id: str, protobuf: bool = False) -> Any:
        accept = "application/x-protobuf" if protobuf else "application/json"
        for _ in range(200):
            status, answer = self.post(
                "retrieve_future",
                json.dumps({"request_id": request_id}).encode(),
                {"Content-Type": "application/json", "Accept": accept},
            )
            assert status == 200, answer
            if protobuf and not answer.startswith(b"{"):
                return decode_forward_backward_output(answer)
            value = json.loads(answer)
            if value.get("type") != "try_again":
                return value
        raise AssertionError(f"future {request_id} never finished")

    def model(self, base_model: str = "tinker-ref/tiny-bytes") -> str:
        session = self.json("create_session", {"tags": [], "user_metadata": {}})["session_id"]
        body = {
            "session_id": session,
            "model_seq_id": 0,
            "base_model": base_model,
            "lora_config": {"rank": 4, "seed": 0},
            "type": "create_model",
        }
        return str(self.result(self.json("create_model", body)["request_id"])["model_id"])

    def forward_backward(
        self,
        model_id: str,
        seq_id: int,
        data: list[types.Datum],
        forward_only: bool,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        body = encode_forward_backward_request(
            model_id, seq_id, data, "cross_entropy", None, forward_only=forward_only
        )
        all_headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        status, answer = self.post("forward_backward", body, all_headers)
        if status != 200:
            return status, json.loads(answer)
        return status, self.result(json.loads(answer)["request_id"], protobuf=True)

    def optim_step(self, model_id: str, seq_id: int, learning_rate: float) -> None:
        adam = {"learning_rate": learning_rate, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12}
        body = {"model_id": model_id, "seq_id": seq_id, "adam_params": adam, "type": "optim_step"}
        self.result(self.json("optim_step", body)["request_id"])


PAIRS = [(b"the answer is yes", b"the answer is no!"), (b"good: 42", b"bad: 41")]


def margin_datums() -> list[types.Datum]:
    """(chosen, rejected) pairs as full-sequence datums; the custom loss is a margin loss."""
    return [datum(text) for pair in PAIRS for text in pair]


def custom_loss_step(raw: Raw, model_id: str, seq_id: int, report: bool, sdk_header: bool) -> float:
    """One forward_backward_custom step by hand: forward, the margin loss on the client,
    backward with weights = -dLoss/dlogprobs (spec CL-7), optim_step. Returns the custom loss."""
    data = margin_datums()
    _, forward = raw.forward_backward(model_id, seq_id, data, forward_only=True)
    logprobs = [
        torch.tensor(output["logprobs"].tolist(), requires_grad=True)
        for output in forward.loss_fn_outputs
    ]
    sums = [lp.sum() for lp in logprobs]
    margins = torch.stack([sums[i] - sums[i + 1] for i in range(0, len(sums), 2)])
    loss = torch.nn.functional.softplus(4.0 - margins).sum()  # want chosen ahead by 4 nats
    loss.backward()
    backward = [
        types.Datum(
            model_input=d.model_input,
            loss_fn_inputs={
                "target_tokens": d.loss_fn_inputs["target_tokens"],
                "weights": (-lp.grad).tolist(),  # type: ignore[union-attr]
            },
        )
        for d, lp in zip(data, logprobs, strict=True)
    ]
    headers = {}
    if report:
        headers["X-Tinker-Custom-Loss"] = repr(loss.item())
    if sdk_header:
        headers["x-sdk-method"] = "TrainingClient.forward_backward_custom"
    status, _ = raw.forward_backward(model_id, seq_id + 1, backward, False, headers)
    assert status == 200
    raw.optim_step(model_id, seq_id + 2, learning_rate=2e-2)
    return loss.item()


def custom_run_failures_and_checkpoint(mock: MockServer, steps: int) -> dict[str, Any]:
    raw = Raw(mock)
    model_id = raw.model()
    losses = [custom_loss_step(raw, model_id, 1 + 3 * i, True, True) for i in range(steps)]
    save = {
        "model_id": model_id,
        "path": "after-margin",
        "seq_id": 1 + 3 * steps,
        "type": "save_weights",
    }
    saved = raw.result(raw.json("save_weights", save)["request_id"])
    # A run that fails on purpose: a token outside the vocabulary, and an unknown base model.
    failing = raw.model()
    bad = types.Datum(
        model_input=types.ModelInput.from_ints([1, 2]),
        loss_fn_inputs={"target_tokens": [2, 999], "weights": [1.0, 1.0]},
    )
    failed = raw.forward_backward(failing, 1, [bad], forward_only=False)
    session = raw.json("create_session", {"tags": [], "user_metadata": {}})["session_id"]
    unknown = {
        "session_id": session,
        "model_seq_id": 0,
        "base_model": "nobody/Nothing-1B",
        "lora_config": {"rank": 4},
        "type": "create_model",
    }
    raw.json("create_model", unknown, expect=422)
    # An official-SDK-style custom-loss run: names the method, does not report its loss.
    hidden = raw.model()
    custom_loss_step(raw, hidden, 1, report=False, sdk_header=True)
    return {
        "model_id": model_id,
        "losses": losses,
        "surrogate": mock.losses(model_id),
        "saved": saved,
        "failing": failing,
        "failed": failed,
        "hidden": hidden,
    }


def test_custom_loss_header_must_be_a_number_and_is_refused_naming_it() -> None:
    with tinker_ref.mock.serve(seed=0) as mock:
        raw = Raw(mock)
        model_id = raw.model()
        headers = {"X-Tinker-Custom-Loss": "low"}
        status, body = raw.forward_backward(model_id, 1, margin_datums(), False, headers)
        assert (status, body["field"]) == (400, "X-Tinker-Custom-Loss")
        assert "expected a finite number" in body["detail"]
        # The refused request consumed its seq_id (a rejected op with readable ids does).
        status, _ = raw.forward_backward(model_id, 2, margin_datums(), False)
        assert status == 200
        assert mock.requests("forward_backward")[-1]["status"] == 200


def test_status_page_in_headless_chromium_shows_custom_loss_failures_and_checkpoint(
    tmp_path: Path,
) -> None:
    require_chromium()
    screenshot = tmp_path / "status-custom-loss.png"
    with tinker_ref.mock.serve(seed=0) as mock:
        run = custom_run_failures_and_checkpoint(mock, steps=8)
        url = mock.url + "/"
        dom = dom_and_screenshot(url, tmp_path, screenshot, height=1600)
    page = parse(dom)
    losses, surrogate = run["losses"], run["surrogate"]
    assert losses[-1] < 0.5 * losses[0], losses  # the margin loss the user optimises fell
    # The custom-loss run: the client's loss, labelled as such, beside the server surrogate.
    model_rows = {"class": "model"}
    (row,) = page.find("tr", data_model_id=run["model_id"], **model_rows)
    assert (row["data-loss-kind"], row["data-steps"]) == ("reported", "8")
    (custom,) = page.find("svg", data_model_id=run["model_id"], data_series="custom")
    assert custom["data-label"] == "custom loss (reported by the client)"
    assert float(custom["data-first"]) == losses[0] and float(custom["data-last"]) == losses[-1]
    (server,) = page.find("svg", data_model_id=run["model_id"], data_series="surrogate")
    assert server["data-label"] == "server surrogate"
    assert float(server["data-last"]) == surrogate[-1] != losses[-1]
    text = "".join(page.text)
    assert "custom loss (reported by the client) · 8 passes" in text
    assert "server surrogate · 8 passes" in text
    # The SDK-style run that does not report its loss: the page says it cannot see it.
    (hidden,) = page.find("tr", data_model_id=run["hidden"], **model_rows)
    assert hidden["data-loss-kind"] == "hidden"
    assert page.find("p", **{"class": "muted custom-loss-hidden"})
    assert "not visible to the server" in text
    # The failing run: its failure with status and field, and the unknown base model.
    status, _ = run["failed"]
    (failing,) = page.find("tr", data_model_id=run["failing"], **model_rows)
    assert failing["data-failures"] == "1"
    failures = page.find("tr", **{"class": "failure"})
    by_endpoint = {f["data-endpoint"]: f for f in failures}
    create = by_endpoint["/api/v1/create_model"]
    assert create["data-status"] == "422" and create["data-field"] == "base_model"
    if status == 200:  # refused when the op ran: a failed future (category user)
        assert by_endpoint["/api/v1/forward_backward"]["data-status"] == "failed future (user)"
    else:
        assert by_endpoint["/api/v1/forward_backward"]["data-status"] == str(status)
    assert "nobody/Nothing-1B" in text
    # The checkpoint, saved, with its tinker:// path.
    (checkpoint,) = page.find("tr", **{"class": "checkpoint"})
    assert checkpoint["data-outcome"] == "saved"
    assert checkpoint["data-path"] == run["saved"]["path"]
    assert page.find("p", id="server")[0]["data-pending"] == "0"
    width, height, _ = png_pixels(screenshot)
    assert (width, height) == (1400, 1600)
    assert stroke_pixels(screenshot, CUSTOM_STROKE) > 150  # the custom loss curve was drawn
    assert stroke_pixels(screenshot) > 150  # and the surrogate's
