"""Python code blocks in Markdown files, and the ``<!-- test: ... -->`` markers that say how to run them.

The conventions are described in tests/test_doc_examples.py, which runs every
block; tests/test_packaging.py runs the README's server and client blocks from
an installed wheel.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<info>[^`\s]*)")
MARKER = re.compile(r"^\s*<!--\s*test:\s*(?P<spec>.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    kind: str = "run"  # run, conn, server, client, wsgi, skip
    options: dict[str, str] = field(default_factory=dict)
    setup: str = ""
    continues: bool = False

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse_marker(spec: str) -> tuple[str, dict[str, str], str, bool]:
    if spec.startswith("skip:"):
        reason = spec[len("skip:") :].strip()
        assert reason, "a skipped block must say why"
        return "skip", {"reason": reason}, "", False
    spec, _, setup = spec.partition("setup:")
    words = shlex.split(spec)
    kind = "run"
    options: dict[str, str] = {}
    continues = False
    for word in words:
        if "=" in word:
            key, _, value = word.partition("=")
            options[key] = value
        elif word == "continues":
            continues = True
        elif kind == "run" and word in ("run", "conn", "server", "client", "wsgi"):
            kind = word
        else:
            raise ValueError(f"unknown word in a test marker: {word!r}")
    return kind, options, setup.strip(), continues


def collect(path: Path) -> list[Block]:
    """The Python code blocks of a Markdown file, with what their markers say."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"]
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if info in ("python", "py", "python3"):
            body = [line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : end]]
            block = Block(path, i + 1, "\n".join(body) + "\n")
            before = i - 1
            while before >= 0 and not lines[before].strip():
                before -= 1
            marker = MARKER.match(lines[before]) if before >= 0 else None
            if marker:
                block.kind, block.options, block.setup, block.continues = parse_marker(marker["spec"])
            blocks.append(block)
        i = end + 1
    return blocks
