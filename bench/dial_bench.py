"""Dials per second: ``threadws.dial`` then ``close``, with DEBUG tracing off and on.

    python bench/dial_bench.py [--dials N] [--repeats R]

Starts ``bench/servers/threadws_server.py`` in a process of its own, then in
this process dials it N times in a row (each dial: TCP connect, opening
handshake, closing handshake, the connection's threads started and joined),
with the ``threadws`` logger at INFO (tracing off) and at DEBUG (every line
formatted into a handler that writes to /dev/null), R rounds of each,
interleaved so that a busy machine slows both alike. Prints one JSON line:
the median dials/s and the median CPU time per dial (this process and its
threads: steadier than the rate on a busy machine) of each.

To compare two versions of threadws, run it with each on PYTHONPATH; it uses
nothing newer than ``threadws.dial``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import threadws

HERE = Path(__file__).resolve().parent


def dial_rounds(url: str, count: int) -> tuple[float, float]:
    """(dials per second, CPU microseconds per dial in this process, its threads included)."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        conn = threadws.dial(url, ping_interval=None)
        conn.close()
    return count / (time.perf_counter() - start), (time.process_time() - cpu) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dials", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "servers" / "threadws_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline().split()
        url = f"ws://127.0.0.1:{ready[1]}/"
        logger = logging.getLogger("threadws")
        sink = logging.StreamHandler(open(os.devnull, "w"))
        sink.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(sink)
        dial_rounds(url, 50)  # warm up
        off: list[tuple[float, float]] = []
        on: list[tuple[float, float]] = []
        for _ in range(args.repeats):
            logger.setLevel(logging.INFO)
            off.append(dial_rounds(url, args.dials))
            logger.setLevel(logging.DEBUG)
            on.append(dial_rounds(url, args.dials))
        result = {
            "threadws": threadws.__file__,
            "dials": args.dials,
            "repeats": args.repeats,
            "debug_off_dials_per_s": round(statistics.median(rate for rate, _ in off)),
            "debug_off_cpu_us_per_dial": round(statistics.median(cpu for _, cpu in off)),
            "debug_on_dials_per_s": round(statistics.median(rate for rate, _ in on)),
            "debug_on_cpu_us_per_dial": round(statistics.median(cpu for _, cpu in on)),
            "loadavg": [round(x, 1) for x in os.getloadavg()],
        }
        print(json.dumps(result))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
