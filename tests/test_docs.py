"""The Sphinx site builds with warnings as errors, so a docstring that breaks it fails CI."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import threadws

pytest.importorskip("sphinx")
pytest.importorskip("furo")
pytest.importorskip("myst_parser")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def sphinx_build(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """The README's command: warnings are errors; -E -a: a fresh build, whatever was built before."""
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-a", "-q", "-b", "html", str(source), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    result = sphinx_build(DOCS, tmp_path / "html")
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "html" / "api.html").read_text()
    for name in threadws.__all__:  # every public name has its entry, signature and all
        assert f'id="threadws.{name}"' in api, f"threadws.{name} is missing from the API reference"
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", api)).split())
    # Signatures with their types and defaults, as written in the source.
    assert "threadws.dial(url: str, *, headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None," in text
    assert "read_limit: int = 1 << 20," in text
    assert "max_connections: int | None = 4096," in text  # serve()'s, from ServerLimits
    # The classes that hold those defaults, their own signatures written the same way.
    assert "class threadws.Settings(read_limit: int = 1 << 20, ping_interval: float | None = 20.0," in text
    assert "class threadws.ServerLimits(max_connections: int | None = 4096, max_handshakes: int | None = 128," in text


def test_a_broken_docstring_fails_the_build(tmp_path: Path) -> None:
    # A copy of the package and the docs, with one docstring broken the way a
    # hurried edit breaks them (an indented line that reST can't place).
    shutil.copytree(ROOT / "threadws", tmp_path / "threadws", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("_build"))
    module = tmp_path / "threadws" / "hub.py"
    text = module.read_text()
    marker = '        """Add *conn*; it is unregistered automatically when it closes.'
    assert marker in text
    module.write_text(text.replace(marker, marker + "\n\n        Returns:\n    nothing, badly indented\n"))
    result = sphinx_build(tmp_path / "docs", tmp_path / "html")
    assert result.returncode != 0
    assert "threadws.hub.Hub.register" in result.stderr, result.stderr  # the warning names the docstring
    assert str(tmp_path / "threadws" / "hub.py") in result.stderr  # and it was the copy that was built
