"""A 1 GiB message streamed each way through a connection, in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(600)
def test_one_gib_each_way_in_bounded_memory():
    size = 1 << 30
    script = Path(__file__).parent / "scripts" / "stream_gib.py"
    out = subprocess.run([sys.executable, str(script), str(size)], capture_output=True, text=True, timeout=550)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    up_sent, (up_size, up_received) = result["up"]
    down_sent, (down_size, down_received) = result["down"]
    assert up_size == down_size == size
    assert up_sent == up_received and down_sent == down_received
    growth = result["peak_rss"] - result["baseline_rss"]
    assert growth < 32 << 20, f"peak memory grew by {growth >> 20} MiB"
