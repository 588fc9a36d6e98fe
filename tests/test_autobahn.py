"""The Autobahn Testsuite (0.8.2, run on Python 2.7) against threadws, as server and as client.

Skip it locally with ``-m "not autobahn"``; CI runs it. Reports land in
``tests/autobahn/reports/{server,client}/index.html``.

By default the 108 compression cases with messages over 16 KiB are left out: with
them a side takes over 20 minutes on two cores (wstest deflates in Python 2.7),
without them about 3. ``THREADWS_AUTOBAHN_FULL=1`` runs all 517 cases (the
README's table comes from such a run).

Both sides run again over TLS (``wss://``, a trustme certificate; wstest is
Twisted with pyOpenSSL 21 on OpenSSL 1.1.1, which speaks TLS 1.3 with Python's
``ssl``) on cases 1 to 10, the framing, UTF-8 and closing cases: compression
(12, 13) is the same code over TLS as over TCP. They take about half a minute
a side, must pass the same bar, and must give each case the same outcome as
the plain run when both ran in one session. Reports:
``tests/autobahn/reports/{server,client}-tls/``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest

import threadws

from .autobahn import harness
from .conftest import start_server, stop_server
from .tls_tools import Certificates

# With compression, 12.* and 13.* push 216,000 messages of up to 128 KiB through zlib
# on both ends (wstest's in Python 2.7): most of a side's run time.
pytestmark = [pytest.mark.autobahn, pytest.mark.timeout(3600)]

REPORTS = Path(__file__).parent / "autobahn" / "reports"
AGENT = "threadws"
# Every case must pass, permessage-deflate's 12.* and 13.* included: threadws
# runs with compression on (the defaults), and wstest offers or accepts it in
# those cases only.
NOT_YET: tuple[str, ...] = ()
FULL = os.environ.get("THREADWS_AUTOBAHN_FULL") == "1"
EXCLUDE: tuple[str, ...] = () if FULL else tuple(harness.COMPRESSION_SLOW_CASES)
# Autobahn's 9.* cases send messages of up to 16 MiB.
# 9.3.* and 9.4.* send 4 MiB in fragments of 64 bytes: 65,536 of them.
SETTINGS = {
    "read_limit": 64 << 20,
    "max_fragments": 1 << 20,
    "ping_interval": None,
    "close_timeout": 5.0,
    "compression": True,
}
# Over TLS: cases 1.* to 10.* ("1.*" is the regex "1\..*" to wstest: not 10.*).
TLS_CASES = tuple(f"{group}.*" for group in range(1, 11))
TLS_CASES_COUNT = 301
# Each side's plain results, kept for the TLS run to compare with.
PLAIN: dict[str, dict] = {}


def echo(conn: threadws.Conn) -> None:
    while True:
        kind, data = conn.read_message()
        conn.write_message(kind, data)


def check(results: dict, side: str, total: int = harness.ALL_CASES_COUNT - len(EXCLUDE)) -> None:
    summary = harness.summarize(results)
    (REPORTS / f"{side}-summary.json").write_text(json.dumps(summary, indent=2))
    bad = harness.failures(results, allow_unimplemented=NOT_YET)
    assert not bad, f"{side}: {len(bad)} cases below the bar, e.g. {bad[:5]}; summary {summary}"
    assert summary["total"] == total


def check_tls(results: dict, side: str) -> None:
    """The plain bar, on cases 1 to 10; and each case's outcome as over TCP, if that side ran plain too."""
    check(results, f"{side}-tls", TLS_CASES_COUNT)
    plain = PLAIN.get(side)
    if plain is not None:
        def outcome(result: dict) -> tuple[str, str]:
            return result["behavior"], result["behaviorClose"]

        differ = {
            case: {"tcp": outcome(plain[case]), "tls": outcome(r)}
            for case, r in results.items()
            if outcome(r) != outcome(plain[case])
        }
        assert not differ, f"{side}: outcomes over TLS differ from TCP: {differ}"


@pytest.fixture(scope="module")
def wstest() -> str:
    return harness.wstest_path()


def test_server_side(wstest, caplog):
    caplog.set_level(logging.CRITICAL, logger="threadws")  # failing the fuzzer's bad frames is expected
    server = start_server(echo, upgrader=threadws.Upgrader(**SETTINGS))
    try:
        host, port = server.server_address
        results = harness.run_fuzzingclient(
            f"ws://{host}:{port}", str(REPORTS / "server"), exclude=EXCLUDE, agent=AGENT, timeout=3000
        )
    finally:
        stop_server(server)
    PLAIN["server"] = results
    check(results, "server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_client_side(fuzzer: harness.FuzzingServer, **dial: Any) -> dict:
    """Connect to every case of *fuzzer* in turn, echo what it sends; return its report."""
    for case in range(1, fuzzer.get_case_count() + 1):
        try:
            conn = threadws.dial(harness.case_url(fuzzer.url, case, AGENT), timeout=30, **SETTINGS, **dial)
        except (OSError, threadws.HandshakeError):
            continue  # the case is judged by the fuzzer's report
        try:
            echo(conn)
        except threadws.ConnectionClosed:
            pass
        assert conn.wait_closed(30), f"case {case}: connection did not end"
    return fuzzer.update_reports(AGENT)


def test_client_side(wstest, caplog):
    caplog.set_level(logging.CRITICAL, logger="threadws")
    with harness.start_fuzzingserver(free_port(), str(REPORTS / "client"), exclude=EXCLUDE) as fuzzer:
        results = run_client_side(fuzzer)
    PLAIN["client"] = results
    check(results, "client")


def test_server_side_over_tls(wstest, caplog, tls_certs: Certificates):
    caplog.set_level(logging.CRITICAL, logger="threadws")
    server = start_server(echo, upgrader=threadws.Upgrader(**SETTINGS), ssl_context=tls_certs.server)
    try:
        host, port = server.server_address
        results = harness.run_fuzzingclient(
            f"wss://{host}:{port}", str(REPORTS / "server-tls"), cases=TLS_CASES, agent=AGENT, timeout=1200
        )
    finally:
        stop_server(server)
    check_tls(results, "server")


def test_client_side_over_tls(wstest, caplog, tls_certs: Certificates):
    caplog.set_level(logging.CRITICAL, logger="threadws")
    pems = {"cert": tls_certs.cert_pem, "key": tls_certs.key_pem, "ca": tls_certs.ca_pem}
    with harness.start_fuzzingserver(free_port(), str(REPORTS / "client-tls"), cases=TLS_CASES, **pems) as fuzzer:
        assert fuzzer.url.startswith("wss://")
        results = run_client_side(fuzzer, ssl_context=tls_certs.client)
    check_tls(results, "client")
