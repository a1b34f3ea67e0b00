"""The status page (`GET /`) in a real browser: headless Chromium (Debian's `chromium`) loads it
from a mock that trained a model, dumps the DOM it built and takes a screenshot.

DOM assertions check the numbers against the server's own record (`MockServer.losses`); the
screenshot (written under pytest's tmp dir, never committed) is decoded here and must contain
the curve's stroke colour inside the page, i.e. the browser really drew the SVG.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import urllib.request
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

import tinker_ref.mock
from mock_server.testing import MockServer
from tinker_ref import ServiceClient, types

CHROMIUM = shutil.which("chromium")
STROKE = (0x1F, 0x6F, 0xEB)  # svg.loss-curve polyline stroke in status_page._STYLE
TEXT = b"the status page draws this loss curve"


def train(mock: MockServer, steps: int) -> str:
    with ServiceClient(base_url=mock.url, api_key=mock.api_key) as service:
        training = service.create_lora_training_client("tinker-ref/tiny-bytes", rank=4, seed=0)
        tokens = list(TEXT)
        datum = types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
        )
        for _ in range(steps):
            training.forward_backward([datum], "cross_entropy").result()
            training.optim_step(types.AdamParams(learning_rate=2e-2)).result()
        # A forward-only pass is not training: it must not appear on the curve.
        training.forward([datum], "cross_entropy").result()
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
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


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


def stroke_pixels(path: Path) -> int:
    """Pixels within a small distance of the curve's stroke colour (anti-aliasing blends the
    edges, the line's core keeps the colour)."""
    width, _, rows = png_pixels(path)
    count = 0
    for row in rows:
        reds, greens, blues = row[:width], row[width : 2 * width], row[2 * width :]
        for r, g, b in zip(reds, greens, blues, strict=True):
            if abs(r - STROKE[0]) + abs(g - STROKE[1]) + abs(b - STROKE[2]) < 60:
                count += 1
    return count


def test_status_page_is_html_with_models_and_needs_no_api_key() -> None:
    with tinker_ref.mock.serve(seed=0) as mock:
        status, content_type, empty = fetch(mock.url + "/")
        assert (status, content_type) == (200, "text/html; charset=utf-8")
        assert parse(empty).find("table", id="models") and not parse(empty).find("tr")[2:]
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
    if CHROMIUM is None:
        # CI must run this test: there a missing browser is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (Debian: apt-get install -y chromium)")
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    screenshot = tmp_path / "status.png"
    with tinker_ref.mock.serve(seed=0) as mock:
        model_id = train(mock, steps=10)
        losses = mock.losses(model_id)
        url = mock.url + "/"
        dom = chromium("--dump-dom", url, profile=tmp_path / "profile-dom").stdout
        chromium(
            "--window-size=1400,500", f"--screenshot={screenshot}", url, profile=tmp_path / "p2"
        )
    print(f"status page screenshot: {screenshot}")
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
    assert "cross_entropy · 10 passes" in "".join(page.text)
    assert page.find("tr", data_session_id=model_id.split(":")[0])
    width, height, _ = png_pixels(screenshot)
    assert (width, height) == (1400, 500)
    assert stroke_pixels(screenshot) > 150  # a ~300 px long, 1.5 px wide curve was drawn
