"""Every Python code block in README.md and docs/ runs, so a snippet that drifts from the API fails.

How a block runs is said by an HTML comment on the line before its fence
(invisible on GitHub, PyPI and the Sphinx site). Each block runs in a
subprocess of its own (the repository on its path), in a temporary directory.

* no comment (or ``<!-- test: run -->``): the block runs as a script and must exit with status 0 within
  BLOCK_TIMEOUT seconds.
* ``<!-- test: conn -->``: the block runs after a prelude that gives it
  ``conn``, a client connection to a server that first sends one binary
  message, then echoes text messages and swallows binary ones (it accepts
  compression and messages up to 16 MiB); ``url``, that server's address; ``sink`` (an
  ``io.BytesIO``) and ``source`` (a list of bytes); ``threadws``,
  ``MessageType`` and ``CloseCode``.
* ``<!-- test: server port=8765 path=/echo -->``: the block is a server that
  runs until killed. Every occurrence of the port number in it is replaced by a
  free port; once that port accepts connections, the test dials ``path`` (``/``
  by default), expects a text message to be echoed, closes, and kills the
  server. If the next block is marked ``client port=8765`` (the same number),
  that block runs against the server instead of the echo check, with the same
  replacement, and must exit with status 0.
* ``<!-- test: wsgi path=/echo app=app -->``: the block defines a WSGI
  application named ``app`` (or as given); it is served by Werkzeug's threaded
  development server on a free port and checked as a server is.
* ``<!-- test: skip: <why> -->``: not run; only for another library's code shown
  for comparison (the reason is required).
* Any of these may end with ``setup: <python code>``, run before the block
  (``<!-- test: conn setup: jpeg = bytes(1000) -->``), and may say ``continues``
  to run the previous block of the same file first (a snippet that adds a route
  to the app above it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import threadws

from .conftest import wait_until
from .doc_blocks import ROOT, Block, collect

SOURCES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)]
BLOCK_TIMEOUT = 60.0
STARTUP_TIMEOUT = 20.0

ALL = [block for path in SOURCES for block in collect(path)]
RUNNABLE = [block for block in ALL if block.kind not in ("client", "skip")]


def test_blocks_were_found() -> None:
    assert len([b for b in ALL if b.path.name == "README.md"]) >= 6
    assert {b.kind for b in ALL} >= {"run", "conn", "server", "client", "wsgi"}
    skipped = [block.id for block in ALL if block.kind == "skip"]
    assert len(skipped) <= 2, f"only other libraries' code may be skipped: {skipped}"
    for index, block in enumerate(ALL):  # every client block follows its server
        if block.kind == "client":
            server = ALL[index - 1]
            assert server.kind == "server" and server.options.get("port") == block.options.get("port"), block.id


CONN_PRELUDE = """\
import io, threading
import threadws
from threadws import CloseCode, MessageType

def _peer(c):
    c.send(b"a message to stream " * 1000)
    for message in c:
        if isinstance(message, str):
            c.send(message)

_server = threadws.serve(_peer, "127.0.0.1", 0, upgrader=threadws.Upgrader(compression=True, read_limit=16 << 20))
threading.Thread(target=_server.serve_forever, daemon=True).start()
url = "ws://%s:%d/" % _server.server_address
conn = threadws.dial(url)
sink = io.BytesIO()
source = [b"block 1 ", b"block 2"]
"""
CONN_EPILOGUE = """
conn.close()
_server.shutdown(timeout=5)
"""
WSGI_EPILOGUE = """
from werkzeug.serving import make_server as _make_server
_make_server("127.0.0.1", {port}, {app}, threaded=True).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def source_of(block: Block) -> str:
    """The block's code, after the previous block's if it continues it, and its setup."""
    code = block.code
    if block.continues:
        index = ALL.index(block)
        previous = ALL[index - 1]
        assert index > 0 and previous.path == block.path, f"{block.id}: nothing to continue"
        code = source_of(previous) + "\n" + code
    if block.setup:
        code = block.setup + "\n" + code
    return code


def run_script(
    code: str, tmp_path: Path, name: str, timeout: float = BLOCK_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / name
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=timeout
    )


def env() -> dict[str, str]:
    result = dict(os.environ)
    result["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), result.get("PYTHONPATH")]))
    return result


def accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@contextmanager
def serving(code: str, port: int, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    script = tmp_path / "server.py"
    script.write_text(code)
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            text=True,
        )
    try:
        wait_until(lambda: proc.poll() is not None or accepting(port), STARTUP_TIMEOUT)
        assert proc.poll() is None, f"the server exited with {proc.returncode}:\n{log_path.read_text()}"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def echo_check(port: int, path: str) -> None:
    with threadws.dial(f"ws://127.0.0.1:{port}{path}", timeout=10) as conn:
        conn.send("hello from the docs test")
        reply = conn.recv(timeout=10)
        while reply != "hello from the docs test":  # a server may greet first
            reply = conn.recv(timeout=10)


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_code_block(block: Block, tmp_path: Path) -> None:
    code = source_of(block)
    if block.kind == "run":
        result = run_script(code, tmp_path, "block.py")
        assert result.returncode == 0, f"{block.id} failed:\n{result.stdout}{result.stderr}"
    elif block.kind == "conn":
        result = run_script(CONN_PRELUDE + "\n" + code + CONN_EPILOGUE, tmp_path, "block.py")
        assert result.returncode == 0, f"{block.id} failed:\n{result.stdout}{result.stderr}"
    elif block.kind in ("server", "wsgi"):
        port = free_port()
        if block.kind == "server":
            placeholder = block.options["port"]
            assert placeholder in code, f"{block.id}: port {placeholder} is not in the block"
            code = code.replace(placeholder, str(port))
        else:
            code += WSGI_EPILOGUE.format(port=port, app=block.options.get("app", "app"))
        index = ALL.index(block)
        client = ALL[index + 1] if index + 1 < len(ALL) and ALL[index + 1].kind == "client" else None
        with serving(code, port, tmp_path):
            if client is None:
                echo_check(port, block.options.get("path", "/"))
            else:
                client_code = source_of(client).replace(client.options["port"], str(port))
                result = run_script(client_code, tmp_path, "client.py")
                assert result.returncode == 0, f"{client.id} failed:\n{result.stdout}{result.stderr}"
    else:
        raise AssertionError(f"{block.id}: unknown kind {block.kind!r}")
