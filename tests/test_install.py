"""`pip install` builds the C speedups where it can, and succeeds without them where it can't.

Each test installs threadws into a fresh virtualenv under tmp_path: from an
sdist built here (so MANIFEST.in must carry the C source), and editable (the
way tests/run.sh installs). ``CC=false`` stands for a machine without a
working compiler. Then a script in that venv checks which masking threadws
uses and echoes a masked message through a real server and client.

Nothing is downloaded: the venv borrows this one's packages (pip,
setuptools, wsproto) through a .pth file, and pip runs with --no-index and
--no-build-isolation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

from .test_speedups import compiler_available

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parent.parent
NOT_BUILT = "threadws: the C speedups (threadws._speedups) were not built;"

# Runs in the new venv: which threadws, which masking, and one echo of a long
# masked message (client masks with mask_after, the server unmasks in place).
CHECK = r"""
import json, threading, threadws
from threadws import _frames

def echo(conn):
    for message in conn:
        conn.send(message)

data = bytes(range(256)) * 300
with threadws.serve(echo) as server:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = threadws.dial("ws://127.0.0.1:%d/" % server.server_address[1], ping_interval=None)
    conn.send(data)
    conn.send("short text é")
    echoed = [conn.recv(timeout=10), conn.recv(timeout=10)]
    conn.close()
    server.shutdown()
    thread.join(10)
assert echoed == [data, "short text é"], "echo differs"
print(json.dumps({"file": threadws.__file__, "speedups": _frames.SPEEDUPS}))
"""


def copy_source(dest: Path) -> Path:
    """The package and the files at the top of the tree (setup.py, setup.cfg, README, ...), without built files."""
    dest.mkdir()
    for path in ROOT.iterdir():
        if path.is_file() and not path.name.startswith("."):  # (a worktree's .git is a file)
            shutil.copy2(path, dest / path.name)
    shutil.copytree(ROOT / "threadws", dest / "threadws", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return dest


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("THREADWS_NO_SPEEDUPS", "CC", "PYTHONPATH")}
    env.update(extra)
    return env


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist of the working tree, built with setuptools' PEP 517 backend."""
    tmp = tmp_path_factory.mktemp("sdist")
    src = copy_source(tmp / "src")
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp)], cwd=src, env=environment(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return tmp / out.stdout.split()[-1]


def new_venv(where: Path) -> Path:
    """A venv without pip that sees this venv's packages after its own; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    site = Path(out.stdout.strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def pip_install(python: Path, target: list[str], cwd: Path, env: dict[str, str]) -> str:
    # --ignore-installed: pip would otherwise see this venv's threadws (through
    # borrowed.pth) as the one to replace.
    flags = ["-v", "--no-index", "--no-deps", "--no-build-isolation", "--ignore-installed"]
    return run([python, "-m", "pip", "install", *flags, *target], cwd, env)


def check(python: Path, cwd: Path) -> dict[str, object]:
    result: dict[str, object] = json.loads(run([python, "-c", CHECK], cwd, environment(), timeout=60).splitlines()[-1])
    return result


def test_sdist_carries_the_c_source(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"setup.py", "threadws/_speedups.c", "threadws/_speedups.pyi", "threadws/_frames.py"} <= names
    assert not [name for name in names if name.endswith((".so", ".pyd"))]


def test_install_without_a_compiler_falls_back_to_python(sdist: Path, tmp_path: Path) -> None:
    python = new_venv(tmp_path / "venv")
    out = pip_install(python, [str(sdist)], tmp_path, environment(CC="false"))
    assert NOT_BUILT in out
    result = check(python, tmp_path)
    assert str(result["file"]).startswith(str(tmp_path / "venv"))
    assert result["speedups"] is False


def test_install_with_a_compiler_builds_the_speedups(sdist: Path, tmp_path: Path) -> None:
    if not compiler_available():
        pytest.skip("no C compiler or Python headers here")
    python = new_venv(tmp_path / "venv")
    out = pip_install(python, [str(sdist)], tmp_path, environment())
    assert NOT_BUILT not in out
    result = check(python, tmp_path)
    assert str(result["file"]).startswith(str(tmp_path / "venv"))
    assert result["speedups"] is True


def test_editable_install_without_a_compiler_falls_back_to_python(tmp_path: Path) -> None:
    src = copy_source(tmp_path / "src")
    python = new_venv(tmp_path / "venv")
    out = pip_install(python, ["-e", str(src)], tmp_path, environment(CC="false"))
    assert NOT_BUILT in out
    result = check(python, tmp_path)
    assert str(result["file"]).startswith(str(src))
    assert result["speedups"] is False
