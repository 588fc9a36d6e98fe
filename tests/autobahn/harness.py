"""Drive the Autobahn|Testsuite 0.8.2 (``wstest``, Python 2.7) from Python 3.

Stdlib only.  Import as ``tests.autobahn.harness`` or load the file by path.

Two directions:

* ``run_fuzzingclient(url, outdir)`` -- wstest is the *client* and fuzzes an
  echo server that is already listening at ``url``; returns the results.
* ``start_fuzzingserver(port, outdir)`` -- wstest is the *server*; the client
  under test loops over ``case_url(...)`` echoing every message, then calls
  ``update_reports(...)`` (or connects to ``handle.update_reports_url(agent)``)
  and ``read_client_report(outdir, agent)`` returns the results.

Both work over TLS: give ``run_fuzzingclient`` a ``wss://`` URL (wstest's
client does not check the certificate), and ``start_fuzzingserver`` the PEM
files of a certificate and its key (and of the CA, for the harness's own
control connections).

Results are the per-agent part of wstest's ``index.json``: a dict mapping a
case id such as ``"1.1.1"`` to a dict with (at least) ``behavior``,
``behaviorClose``, ``duration`` (ms), ``remoteCloseCode`` and ``reportfile``.
``summarize()`` counts them and ``failures()`` applies the pass bar.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import urllib.parse

from ..polling import poll

__all__ = [
    "HERE",
    "INSTALL_SH",
    "ALL_CASES_COUNT",
    "autobahn_home",
    "wstest_path",
    "run_fuzzingclient",
    "start_fuzzingserver",
    "FuzzingServer",
    "read_client_report",
    "read_report",
    "case_url",
    "get_case_count",
    "update_reports",
    "summarize",
    "failures",
    "case_sort_key",
    "durations_by_group",
    "PASS_BEHAVIOR",
    "PASS_BEHAVIOR_CLOSE",
    "COMPRESSION_GROUPS",
    "COMPRESSION_SLOW_CASES",
]

HERE = os.path.dirname(os.path.abspath(__file__))
INSTALL_SH = os.path.join(HERE, "install.sh")

#: Number of cases wstest 0.8.2 has for ``cases=["*"]`` with no exclusions.
ALL_CASES_COUNT = 517

#: permessage-deflate case groups (12.* client offers, 13.* parameter variants)
COMPRESSION_GROUPS = ("12.", "13.")

#: Exact ids of the 12.*/13.* cases with 32 KiB..128 KiB messages (sub-cases
#: 8, 9, 10 and 13-18 of every 12.x / 13.x group).  Each sends 1000 such
#: messages through zlib on both ends and takes 5-30 s; together they are
#: about three quarters of the 12.*/13.* run time.  Pass as ``exclude`` for a
#: quick compression run.  (Explicit ids because wstest's "*" patterns are
#: regexes anchored only at the start: "12.*.1" also matches 12.1.10..18.)
COMPRESSION_SLOW_CASES = tuple(
    f"{group}.{sub}"
    for group in [f"12.{i}" for i in range(1, 6)] + [f"13.{i}" for i in range(1, 8)]
    for sub in (8, 9, 10, 13, 14, 15, 16, 17, 18)
)

PASS_BEHAVIOR = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})
PASS_BEHAVIOR_CLOSE = frozenset({"OK", "INFORMATIONAL"})

_wstest_lock = threading.Lock()
_wstest_cached: str | None = None


# --------------------------------------------------------------------------
# installation


def autobahn_home() -> str:
    """Cache directory holding the Python 2.7 virtualenv (outside the repo)."""
    return os.environ.get("THREADWS_AUTOBAHN_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "threadws", "autobahn"
    )


def wstest_path(install: bool = True, timeout: float = 900.0) -> str:
    """Return the absolute path of ``wstest``, installing it if needed.

    ``$THREADWS_WSTEST`` overrides everything.  Otherwise ``install.sh`` is
    run (it returns within a second when the cached virtualenv is current).
    Raises RuntimeError with the installer's output when wstest cannot be
    provided (e.g. no Python 2.7 on the machine).
    """
    global _wstest_cached
    override = os.environ.get("THREADWS_WSTEST")
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise RuntimeError(f"THREADWS_WSTEST={override!r} is not an executable file")
    with _wstest_lock:
        if _wstest_cached and os.access(_wstest_cached, os.X_OK):
            return _wstest_cached
        if not install:
            cand = os.path.join(autobahn_home(), "venv-0.8.2", "bin", "wstest")
            if os.access(cand, os.X_OK):
                return cand
            raise RuntimeError(f"wstest is not installed (run {INSTALL_SH})")
        try:
            proc = subprocess.run(
                ["bash", INSTALL_SH],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{INSTALL_SH} did not finish within {timeout}s") from exc
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        path = lines[-1].strip() if lines else ""
        if proc.returncode != 0 or not path or not os.access(path, os.X_OK):
            tail = "\n".join(proc.stderr.splitlines()[-30:])
            what = (
                "Python 2.7 is required for the Autobahn Testsuite and was not found"
                if proc.returncode == 2
                else "installing the Autobahn Testsuite failed"
            )
            raise RuntimeError(
                f"wstest unavailable: {what} ({INSTALL_SH} exit {proc.returncode}).\n{tail}"
            )
        _wstest_cached = path
        return path


def _wstest_env() -> dict:
    env = dict(os.environ)
    # cryptography 3.3 on 2.7 warns at every import; keep logs readable.
    env["PYTHONWARNINGS"] = "ignore"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    return env


# --------------------------------------------------------------------------
# spec / report helpers


def _spec_cases(cases, exclude) -> tuple[list, list]:
    if isinstance(cases, str):
        cases = [cases]
    if isinstance(exclude, str):
        exclude = [exclude]
    return list(cases), list(exclude)


def read_report(outdir: str) -> dict:
    """Parse ``outdir/index.json`` (all agents)."""
    path = os.path.join(outdir, "index.json")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise RuntimeError(f"no wstest report at {path}") from None


def read_client_report(outdir: str, agent: str) -> dict:
    """Results for ``agent`` from a fuzzingserver run's ``outdir/index.json``.

    The report exists only after ``updateReports`` was requested (see
    ``update_reports``).  Raises RuntimeError if the agent is not in it.
    """
    report = read_report(outdir)
    if agent not in report:
        raise RuntimeError(
            f"agent {agent!r} not in {os.path.join(outdir, 'index.json')} "
            f"(agents present: {sorted(report)})"
        )
    return report[agent]


def _tail(path: str, n: int = 40) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(collections.deque(fh, maxlen=n))
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


# --------------------------------------------------------------------------
# fuzzingclient: wstest tests a server


def run_fuzzingclient(
    url: str,
    outdir: str,
    cases=("*",),
    exclude=(),
    agent: str = "threadws",
    timeout: float = 1200.0,
    options: dict | None = None,
) -> dict:
    """Run ``wstest -m fuzzingclient`` against the echo server at ``url``.

    The server must already accept connections.  Writes
    ``outdir/fuzzingclient.json`` (the spec), ``outdir/wstest-fuzzingclient.log``
    and wstest's reports (``index.json``, ``index.html`` and per-case files)
    into ``outdir``.  Returns ``{case_id: result}`` for ``agent``.

    Raises RuntimeError if wstest fails, times out (the process group is
    killed), could not connect, or reports fewer cases than it planned
    (wstest silently stops a run when a connection attempt fails).
    """
    wstest = wstest_path()
    os.makedirs(outdir, exist_ok=True)
    outdir = os.path.abspath(outdir)
    cases, exclude = _spec_cases(cases, exclude)
    spec = {
        "outdir": outdir,
        "servers": [{"agent": agent, "url": url}],
        "cases": cases,
        "exclude-cases": exclude,
        "exclude-agent-cases": {},
    }
    if options:
        spec["options"] = dict(options)
    spec_path = os.path.join(outdir, "fuzzingclient.json")
    with open(spec_path, "w", encoding="utf-8") as fh:
        json.dump(spec, fh, indent=2)
    index = os.path.join(outdir, "index.json")
    if os.path.exists(index):
        os.unlink(index)  # never return a stale report
    log_path = os.path.join(outdir, "wstest-fuzzingclient.log")
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [wstest, "-m", "fuzzingclient", "-s", spec_path],
            cwd=outdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_wstest_env(),
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise RuntimeError(
                f"wstest fuzzingclient did not finish within {timeout}s; log {log_path}:\n"
                + _tail(log_path)
            ) from None
        finally:
            _kill_group(proc)
    text = _tail(log_path, n=10**6)
    if rc != 0:
        raise RuntimeError(f"wstest fuzzingclient exited {rc}; log {log_path}:\n" + _tail(log_path))
    failed = re.findall(r"^Connection to .* failed .*$", text, re.M)
    if failed:
        raise RuntimeError(f"wstest could not connect to {url}: {failed[0]} (log {log_path})")
    results = read_client_report(outdir, agent)
    m = re.search(r"^Ok, will run (\d+) test cases", text, re.M)
    planned = int(m.group(1)) if m else None
    if planned is not None and len(results) != planned:
        raise RuntimeError(
            f"wstest planned {planned} cases but reported {len(results)} for {agent!r} "
            f"(the server probably stopped accepting connections); log {log_path}"
        )
    return results


# --------------------------------------------------------------------------
# fuzzingserver: wstest tests a client


class FuzzingServer:
    """Handle for a running ``wstest -m fuzzingserver`` subprocess.

    ``url`` is the base URL (``ws://127.0.0.1:PORT``, ``wss://`` over TLS);
    ``outdir`` receives the reports when ``updateReports`` is requested;
    ``ssl_context`` (over TLS) is what the control connections trust.  Usable
    as a context manager.
    """

    def __init__(self, proc: subprocess.Popen, url: str, port: int, outdir: str,
                 log_path: str, spec_path: str, case_count: int | None,
                 ssl_context: ssl.SSLContext | None = None):
        self.process = proc
        self.url = url
        self.port = port
        self.outdir = outdir
        self.log_path = log_path
        self.spec_path = spec_path
        #: cases wstest announced it will run (parsed from its log), or None
        self.case_count = case_count
        self.ssl_context = ssl_context

    def case_url(self, case: int, agent: str) -> str:
        return case_url(self.url, case, agent)

    def update_reports_url(self, agent: str) -> str:
        return f"{self.url}/updateReports?agent={urllib.parse.quote(agent, safe='')}"

    def get_case_count_url(self) -> str:
        return f"{self.url}/getCaseCount"

    def update_reports(self, agent: str, timeout: float = 300.0) -> dict:
        """Ask wstest (via the stdlib client here) to write reports; return them."""
        update_reports(self.url, agent, timeout=timeout, ssl_context=self.ssl_context)
        return read_client_report(self.outdir, agent)

    def get_case_count(self, timeout: float = 30.0) -> int:
        return get_case_count(self.url, timeout, ssl_context=self.ssl_context)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return _tail(self.log_path, n=10**6)

    def stop(self) -> None:
        """Terminate wstest (process group); idempotent."""
        _kill_group(self.process)

    def __enter__(self) -> "FuzzingServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FuzzingServer {self.url} pid={self.process.pid} outdir={self.outdir!r}>"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_fuzzingserver(
    port: int,
    outdir: str,
    cases=("*",),
    exclude=(),
    startup_timeout: float = 60.0,
    host: str = "127.0.0.1",
    options: dict | None = None,
    cert: str | None = None,
    key: str | None = None,
    ca: str | None = None,
) -> FuzzingServer:
    """Start ``wstest -m fuzzingserver`` on ``port`` and wait until it accepts
    TCP connections (polling with a deadline).  Returns a ``FuzzingServer``.

    wstest binds all interfaces on ``port``; clients should use ``handle.url``
    (``ws://127.0.0.1:PORT``).  Its embedded web UI is disabled (``-u 0``)
    so nothing else is bound.  With ``cert`` and ``key`` (PEM files) it serves
    ``wss://`` instead; ``ca`` (PEM) is then what the harness's own control
    connections (``getCaseCount``, ``updateReports``) trust.  Raises
    RuntimeError if the port is already in use, wstest exits early, or it
    does not listen before the deadline.
    """
    if (cert is None) != (key is None):
        raise ValueError("cert and key go together")
    wstest = wstest_path()
    os.makedirs(outdir, exist_ok=True)
    outdir = os.path.abspath(outdir)
    if _port_open(host, port):
        raise RuntimeError(f"port {port} on {host} already accepts connections")
    cases, exclude = _spec_cases(cases, exclude)
    url = f"{'ws' if cert is None else 'wss'}://{host}:{port}"
    spec = {
        "url": url,
        "outdir": outdir,
        "cases": cases,
        "exclude-cases": exclude,
        "exclude-agent-cases": {},
    }
    if options:
        spec["options"] = dict(options)
    context = None
    if cert is not None:
        spec["cert"], spec["key"] = os.path.abspath(cert), os.path.abspath(key)
        context = ssl.create_default_context(cafile=ca)
    spec_path = os.path.join(outdir, "fuzzingserver.json")
    with open(spec_path, "w", encoding="utf-8") as fh:
        json.dump(spec, fh, indent=2)
    index = os.path.join(outdir, "index.json")
    if os.path.exists(index):
        os.unlink(index)
    log_path = os.path.join(outdir, "wstest-fuzzingserver.log")
    log = open(log_path, "w", encoding="utf-8")
    try:
        proc = subprocess.Popen(
            [wstest, "-m", "fuzzingserver", "-s", spec_path, "-u", "0"],
            cwd=outdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_wstest_env(),
            start_new_session=True,
        )
    finally:
        log.close()  # the child holds its own descriptor
    # Until it listens, or exits.
    listening = poll(lambda: proc.poll() is not None or _port_open(host, port), startup_timeout, 0.05)
    if proc.poll() is not None:
        raise RuntimeError(
            f"wstest fuzzingserver exited {proc.returncode} at startup; log {log_path}:\n" + _tail(log_path)
        )
    if not listening:
        _kill_group(proc)
        raise RuntimeError(
            f"wstest fuzzingserver not listening on {host}:{port} after "
            f"{startup_timeout}s; log {log_path}:\n" + _tail(log_path)
        )
    m = re.search(r"^Ok, will run (\d+) test cases", _tail(log_path, n=10**6), re.M)
    return FuzzingServer(proc, url, port, outdir, log_path, spec_path,
                         int(m.group(1)) if m else None, context)


def case_url(base_url: str, case: int, agent: str) -> str:
    """``ws://host:port/runCase?case=N&agent=AGENT`` (N is 1-based)."""
    q = urllib.parse.urlencode({"case": int(case), "agent": agent})
    return f"{base_url.rstrip('/')}/runCase?{q}"


# --------------------------------------------------------------------------
# tiny stdlib WebSocket client for the fuzzingserver control endpoints
# (so the control flow does not depend on the library under test)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by wstest")
        buf += chunk
    return bytes(buf)


def _control_request(url: str, timeout: float, ssl_context: ssl.SSLContext | None = None) -> list:
    """Open ``url``, collect text messages until the server's close, reply
    with a close and return the messages.  A ``wss://`` URL needs
    ``ssl_context``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"only ws:// and wss:// URLs are supported here: {url!r}")
    if parts.scheme == "wss" and ssl_context is None:
        raise ValueError(f"{url!r} needs an ssl_context")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    request = (
        f"GET {resource} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode("ascii")
    messages: list = []
    sock = socket.create_connection((host, port), timeout=timeout)
    if parts.scheme == "wss":
        try:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)  # takes the socket over
        except BaseException:
            sock.close()
            raise
    with sock:
        sock.settimeout(timeout)
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"no handshake response from {url}")
            head += chunk
            if len(head) > 65536:
                raise ConnectionError("oversized handshake response")
        head, rest = head.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"handshake to {url} failed: {status!r}")
        pending = bytearray(rest)

        def read(n: int) -> bytes:
            nonlocal pending
            if len(pending) >= n:
                out = bytes(pending[:n])
                del pending[:n]
                return out
            out = bytes(pending) + _recv_exact(sock, n - len(pending))
            pending = bytearray()
            return out

        fragments: list = []
        while True:
            b0, b1 = read(2)
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", read(8))
            mask = read(4) if b1 & 0x80 else None
            payload = read(length)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            if opcode in (0x0, 0x1, 0x2):
                fragments.append(payload)
                if b0 & 0x80:
                    messages.append(b"".join(fragments).decode("utf-8", "replace"))
                    fragments = []
            elif opcode == 0x9:  # ping -> pong
                _send_frame(sock, 0xA, payload)
            elif opcode == 0x8:
                _send_frame(sock, 0x8, payload[:2])
                break
    return messages


def _send_frame(sock: socket.socket, opcode: int, payload: bytes) -> None:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    body = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    try:
        sock.sendall(header + mask + body)
    except OSError:
        pass


def get_case_count(base_url: str, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> int:
    """Ask a fuzzingserver how many cases it runs (``/getCaseCount``)."""
    msgs = _control_request(f"{base_url.rstrip('/')}/getCaseCount", timeout, ssl_context)
    if not msgs:
        raise RuntimeError("getCaseCount returned no message")
    return int(json.loads(msgs[0]))


def update_reports(
    base_url: str, agent: str, timeout: float = 300.0, ssl_context: ssl.SSLContext | None = None
) -> None:
    """Ask a fuzzingserver to write its reports (``/updateReports``).

    wstest writes every report before it sends the close frame, so when this
    returns ``index.json`` is complete.  The agent parameter is accepted by
    wstest but reports are written for all agents seen so far.
    """
    q = urllib.parse.urlencode({"agent": agent})
    _control_request(f"{base_url.rstrip('/')}/updateReports?{q}", timeout, ssl_context)


# --------------------------------------------------------------------------
# evaluation


def case_sort_key(case_id: str) -> tuple:
    """Numeric sort key for ids like ``"9.10.2"``."""
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def summarize(results: dict) -> dict:
    """Count outcomes: ``{"total": N, "behavior": {...}, "behaviorClose": {...}}``."""
    behavior = collections.Counter(r.get("behavior") for r in results.values())
    close = collections.Counter(r.get("behaviorClose") for r in results.values())
    return {
        "total": len(results),
        "behavior": dict(sorted(behavior.items(), key=lambda kv: str(kv[0]))),
        "behaviorClose": dict(sorted(close.items(), key=lambda kv: str(kv[0]))),
    }


def _matches(case_id: str, prefixes) -> bool:
    for p in prefixes:
        # "12." and "12" both mean group 12 (not 120)
        p = p if p.endswith(".") else p + "."
        if (case_id + ".").startswith(p):
            return True
    return False


def failures(results: dict, allow_unimplemented=()) -> list:
    """Cases that miss the bar, sorted by case id.

    A case passes when ``behavior`` is OK, NON-STRICT or INFORMATIONAL and
    ``behaviorClose`` is OK or INFORMATIONAL.  For cases whose id starts with
    one of ``allow_unimplemented`` (e.g. ``("12.", "13.")`` for
    permessage-deflate), UNIMPLEMENTED is accepted for both fields.

    Each entry: ``{"case", "behavior", "behaviorClose", "reportfile"}``.
    """
    if isinstance(allow_unimplemented, str):
        allow_unimplemented = (allow_unimplemented,)
    out = []
    for case_id in sorted(results, key=case_sort_key):
        r = results[case_id]
        ok_b, ok_c = set(PASS_BEHAVIOR), set(PASS_BEHAVIOR_CLOSE)
        if allow_unimplemented and _matches(case_id, allow_unimplemented):
            ok_b.add("UNIMPLEMENTED")
            ok_c.add("UNIMPLEMENTED")
        if r.get("behavior") not in ok_b or r.get("behaviorClose") not in ok_c:
            out.append({
                "case": case_id,
                "behavior": r.get("behavior"),
                "behaviorClose": r.get("behaviorClose"),
                "reportfile": r.get("reportfile"),
            })
    return out


def durations_by_group(results: dict, depth: int = 1) -> dict:
    """Sum of wstest's per-case ``duration`` (ms) by id prefix of ``depth``
    components, e.g. ``{"9": 41234, ...}``; sorted by case id."""
    acc: dict = collections.defaultdict(int)
    for case_id, r in results.items():
        acc[".".join(case_id.split(".")[:depth])] += int(r.get("duration") or 0)
    return dict(sorted(acc.items(), key=lambda kv: case_sort_key(kv[0])))
