"""``python -m build`` makes a complete sdist and wheel, and the wheel works on its own.

The build runs once per test session (a module fixture): the sdist from the
source tree, then the wheel from the sdist, as ``python -m build`` does by
default, so a file the sdist leaves out breaks the wheel too. The wheel is then
installed into a fresh virtualenv, and the README's ten-line server and client
run against each other from it, outside the source tree.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import Parser
from pathlib import Path

import pytest

import threadws

from .conftest import wait_until
from .doc_blocks import ROOT, collect

pytest.importorskip("build")

VERSION = threadws.__version__


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def wheel_of(dist: Path) -> Path:
    # Tagged for this Python and platform when the C speedups were built, py3-none-any otherwise.
    (wheel,) = dist.glob(f"threadws-{VERSION}-*.whl")
    return wheel


def test_the_wheel_ships_the_package_its_license_and_loose_extras(dist: Path) -> None:
    with zipfile.ZipFile(wheel_of(dist)) as wheel:
        names = set(wheel.namelist())
        info = f"threadws-{VERSION}.dist-info"
        license_name = next(n for n in names if n.startswith(info) and n.endswith("/LICENSE"))
        license_text = wheel.read(license_name).decode()
        metadata = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
    assert {"threadws/__init__.py", "threadws/connection.py", "threadws/py.typed"} <= names
    assert not any(name.startswith(("tests/", "examples/", "docs/")) for name in names)
    assert license_text == (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and metadata["License"] == "MIT"
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert set(urls) >= {"Documentation", "Source", "Changelog", "Examples"}
    requirements = metadata.get_all("Requires-Dist")
    extras = [r for r in requirements if "extra ==" in r]
    assert {'extra == "test"', 'extra == "docs"', 'extra == "bench"'} <= {r.split("; ", 1)[1] for r in extras}
    # Published extras give lower bounds only; exact pins live in tests/constraints.txt.
    assert not [r for r in requirements if "==" in r.split(";")[0]], requirements


def test_the_sdist_ships_license_changelog_examples_docs_and_tests(dist: Path) -> None:
    with tarfile.open(dist / f"threadws-{VERSION}.tar.gz") as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    expected = {
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "examples/chat/server.py",
        "examples/flask_chat/app.py",
        "docs/conf.py",
        "docs/deploy/nginx.conf",
        "docs/deploy/gunicorn.conf.py",
        "tests/run.sh",
        "tests/constraints.txt",
    }
    assert expected <= names, expected - names
    assert not any(part in name.split("/") for name in names for part in (".venv", "node_modules", "__pycache__"))


def test_the_changelog_has_this_release_first() -> None:
    headings = [line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")]
    assert headings and headings[0].startswith(f"## {VERSION} "), headings[:1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(python: Path, script: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(python), str(script)], cwd=script.parent, env=clean_env(), stdin=subprocess.DEVNULL,
            stdout=out, stderr=out,
        )  # fmt: skip
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def clean_env() -> dict[str, str]:
    """The environment without anything that would let the source tree be imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_the_readme_server_and_client_run_from_the_wheel_in_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel_of(dist))],
        capture_output=True, text=True, timeout=300, env=clean_env(),
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    where = subprocess.run(
        [str(python), "-c", "import threadws; print(threadws.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env(),
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr  # the wheel, not the source tree

    blocks = collect(ROOT / "README.md")
    server = next(b for b in blocks if b.kind == "server" and "threadws.serve(echo" in b.code)
    client = blocks[blocks.index(server) + 1]
    assert client.kind == "client" and client.options["port"] == server.options["port"]
    port = str(free_port())
    (tmp_path / "server.py").write_text(server.code.replace(server.options["port"], port))
    (tmp_path / "client.py").write_text(client.code.replace(client.options["port"], port))

    with running(python, tmp_path / "server.py", tmp_path / "server.log") as proc:
        wait_until(lambda: proc.poll() is not None or accepting(int(port)), 30)
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        result = subprocess.run(
            [str(python), str(tmp_path / "client.py")],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env(),
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["hello", "b'\\x00\\x01'"]  # what the README's comments say
