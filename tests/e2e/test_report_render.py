"""A report as an analyst sees it: rendered by headless Chromium, not blank, naming what surged.

``surgewatch simulate`` writes 44 h of rednote-2025 at 1 % scale (the wave starts 39 h in) and
``surgewatch report`` turns it into a page. Chromium (Debian ``chromium``, installed by
``make setup``) screenshots the page to a PNG, decoded here with zlib alone, and dumps the DOM it
built, whose surge table must list #tiktokrefugee and US.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from surgewatch.config import ENV_PREFIX
from tests.report_table import surge_table_rows

CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1400, 2000
WHITE = (255, 255, 255)
#: Colours the page draws in solid blocks: the first series colour (legend swatch, the busiest
#: country) and the red of surge marks on the hashtag rows.
FIRST_SERIES = (0x4E, 0x79, 0xA7)
SURGE_RED = (0xD6, 0x27, 0x28)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"{CHROMIUM} not installed: `make setup` installs Debian's chromium",
    ),
]


def surgewatch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "surgewatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Headless Chromium with nothing reaching out (no network, no updates, no first run)."""
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The report page of 44 h of rednote-2025 at 1 % scale."""
    folder = tmp_path_factory.mktemp("report")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    env["CI"] = "1"  # no progress bar
    events = folder / "rednote.jsonl.gz"
    simulated = surgewatch(
        "simulate", "--scale", "0.01", "--hours", "44", "--out", str(events), env=env
    )
    assert simulated.returncode == 0, simulated.stderr
    page = folder / "report.html"
    made = surgewatch("report", str(events), "--out", str(page), env=env)
    assert made.returncode == 0, made.stderr
    assert "2,640 windows" in made.stdout
    yield page
    shutil.rmtree(folder, ignore_errors=True)


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB or RGBA, non-interlaced PNG (as Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset = 8
    idat: list[bytes] = []
    width = height = channels = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace) == (8, 0) and colour in (2, 6), (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        else:
            assert kind == 0, f"unknown PNG filter {kind}"
        previous = bytes(line)
        if channels == 4:
            del line[3::4]
        rows.append(bytes(line))
    return width, height, rows


def test_chromium_renders_the_report_and_it_is_not_blank(report: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    shot = chromium(
        tmp_path / "profile",
        f"--screenshot={png}",
        f"--window-size={WIDTH},{HEIGHT}",
        report.as_uri(),
    )
    assert shot.returncode == 0 and png.exists(), shot.stderr.decode(errors="replace")[-2000:]
    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    colours: Counter[tuple[int, int, int]] = Counter()
    for row in rows[::2]:
        colours.update(zip(row[0::3], row[1::3], row[2::3], strict=True))
    pixels = sum(colours.values())
    ink = pixels - colours[WHITE]
    # Text, axes, areas and lines: a real page has hundreds of shades; a blank one has one.
    assert len(colours) >= 200, len(colours)
    assert 0.04 <= ink / pixels <= 0.6, ink / pixels
    assert colours[FIRST_SERIES] > 0, "no series drawn in the first palette colour"
    assert colours[SURGE_RED] > 0, "no surge mark drawn"
    # Drawn all the way down: the charts below the header carry ink too.
    for band in range(4):
        band_rows = rows[band * height // 5 : (band + 1) * height // 5 : 4]
        band_ink = sum(
            1 for row in band_rows for i in range(0, len(row), 3) if row[i : i + 3] != b"\xff" * 3
        )
        assert band_ink > 1000, f"band {band} of the page is blank"


def test_the_page_chromium_builds_names_the_surging_keys(report: Path, tmp_path: Path) -> None:
    dumped = chromium(tmp_path / "profile", "--dump-dom", report.as_uri())
    assert dumped.returncode == 0, dumped.stderr.decode(errors="replace")[-2000:]
    dom = dumped.stdout.decode("utf-8")
    keys = {(row[0].strip(), row[1].strip()) for row in surge_table_rows(dom)}
    assert ("hashtag", "#tiktokrefugee") in keys
    assert ("signups", "US") in keys
    assert "Surge report: rednote.jsonl.gz" in dom
