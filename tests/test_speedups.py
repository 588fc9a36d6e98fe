"""The optional C masking (threadws._speedups) against the pure-Python fallback and the definition.

RFC 6455 section 5.3: byte i of a payload is XORed with byte i % 4 of the key.
The C functions and threadws._frames's ``py_*`` ones must give the same bytes
for every length (around the 8-byte word and the fallback's 512-byte switch),
every key phase, every start and alignment, and any kind of buffer; and both
must refuse bad arguments cleanly, leaving buffers untouched and released.
Which one threadws uses (``_frames.SPEEDUPS``) is checked here too.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from typing import Any

import pytest

from threadws import _frames

try:
    from threadws import _speedups
except ImportError:  # not built: test_c_path_is_active_where_a_compiler_exists says whether that's right
    _speedups = None  # type: ignore[assignment]

needs_c = pytest.mark.skipif(_speedups is None, reason="threadws._speedups was not built")

KEYS = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x04\x08", b"\x12\x34\x56\x78", b"\x80\x7f\x00\xff"]
# Every length up to 70 (word loop, tail, both sides of each 8 bytes), then the
# fallback's switch from big-integer XOR to translate, and some long ones.
LENGTHS = [*range(71), 511, 512, 513, 1023, 1024, 1025, 4099, 65536 + 5, (1 << 20) + 3]


def reference(data: bytes, key: bytes) -> bytes:
    """The definition, one byte at a time."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + n).randbytes(n)


# The reference is slow in Python: compute it once per (length, key).
_expected: dict[tuple[int, bytes], bytes] = {}


def expected(n: int, key: bytes) -> bytes:
    if (n, key) not in _expected:
        _expected[(n, key)] = reference(payload(n), key)
    return _expected[(n, key)]


IMPLS: list[Any] = [
    pytest.param("python", id="python"),
    pytest.param("c", id="c", marks=needs_c),
]


def impl(name: str) -> tuple[Callable[..., bytes], Callable[..., None], Callable[..., bytes]]:
    """(unmask, unmask_into, mask_after) of one implementation."""
    if name == "c":
        return _speedups.mask, _speedups.mask_into, _speedups.mask_after
    return _frames.py_unmask, _frames.py_unmask_into, _frames.py_mask_after


@pytest.mark.parametrize("name", IMPLS)
@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.hex())
def test_mask_matches_the_definition_at_every_length(name, key):
    unmask, _, _ = impl(name)
    for n in LENGTHS:
        data = payload(n)
        assert unmask(data, key) == expected(n, key), n
        assert unmask(bytearray(data), bytearray(key)) == expected(n, key), n
        assert unmask(memoryview(data), memoryview(key)) == expected(n, key), n


@pytest.mark.parametrize("name", IMPLS)
def test_mask_of_a_slice_at_every_alignment(name):
    """memoryview slices start at any address: unaligned words must still be right."""
    unmask, _, _ = impl(name)
    key = KEYS[3]
    block = memoryview(payload(200))
    for offset in range(9):
        for n in (0, 1, 7, 8, 9, 63, 64, 65, 150):
            view = block[offset : offset + n]
            assert unmask(view, key) == reference(bytes(view), key), (offset, n)


@pytest.mark.parametrize("name", IMPLS)
def test_mask_returns_bytes_and_leaves_its_input(name):
    unmask, _, _ = impl(name)
    data = bytearray(payload(100))
    before = bytes(data)
    out = unmask(data, KEYS[3])
    assert type(out) is bytes
    assert data == before


@pytest.mark.parametrize("name", IMPLS)
def test_mask_into_every_start_phase_and_length(name):
    """In place, the key's first byte at *start*: the rest of the buffer is untouched."""
    _, unmask_into, _ = impl(name)
    key = KEYS[3]
    base = payload(120, seed=1)
    for start in range(9):
        for n in [*range(40), 63, 64, 65, 100]:
            stop = start + n
            if stop > len(base):
                continue
            buf = bytearray(base)
            unmask_into(buf, start, stop, key)
            assert buf == base[:start] + reference(base[start:stop], key) + base[stop:], (start, n)


@pytest.mark.parametrize("name", IMPLS)
@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.hex())
def test_mask_into_long_buffers(name, key):
    _, unmask_into, _ = impl(name)
    for n in LENGTHS[-6:]:
        for start in (0, 3):
            buf = bytearray(b"\xaa" * start + payload(n))
            unmask_into(buf, start, start + n, key)
            assert buf == b"\xaa" * start + expected(n, key), (n, start)


@pytest.mark.parametrize("name", IMPLS)
def test_mask_into_then_rotate_continues_the_stream(name):
    """A long frame unmasked chunk by chunk (as Conn does) equals it unmasked at once."""
    _, unmask_into, _ = impl(name)
    key = KEYS[4]
    data = payload(5000, seed=2)
    buf = bytearray(data)
    rng = random.Random(3)
    i, k = 0, key
    while i < len(buf):
        j = min(len(buf), i + rng.choice((1, 2, 3, 5, 8, 13, 600, 1500)))
        unmask_into(buf, i, j, k)
        k = _frames.rotate(k, j - i)
        i = j
    assert buf == reference(data, key)


@pytest.mark.parametrize("name", IMPLS)
def test_mask_after_is_head_then_masked_data(name):
    _, _, mask_after = impl(name)
    key = KEYS[3]
    for head in (b"", b"\x82\x05", bytearray(b"\x81\xfe\x01\x00abcd"), memoryview(b"xyz")[1:]):
        for n in (0, 1, 5, 8, 100, 70_000):
            data = payload(n)
            out = mask_after(head, data, key)
            assert type(out) is bytes
            assert out == bytes(head) + expected(n, key)


def test_c_and_python_agree_on_random_inputs():
    """A differential sweep: random lengths, keys and starts, C against Python."""
    if _speedups is None:
        pytest.skip("threadws._speedups was not built")
    rng = random.Random(6455)
    for _ in range(500):
        n = rng.choice((rng.randrange(80), rng.randrange(3000)))
        data = rng.randbytes(n)
        key = rng.randbytes(4)
        assert _speedups.mask(data, key) == _frames.py_unmask(data, key)
        head = rng.randbytes(rng.randrange(15))
        assert _speedups.mask_after(head, data, key) == _frames.py_mask_after(head, data, key)
        start = rng.randrange(n + 1)
        stop = rng.randrange(start, n + 1)
        a, b = bytearray(data), bytearray(data)
        _speedups.mask_into(a, start, stop, key)
        _frames.py_unmask_into(b, start, stop, key)
        assert a == b


@pytest.mark.parametrize("name", IMPLS)
def test_every_byte_value_at_every_key_position(name):
    unmask, _, _ = impl(name)
    data = payload(37)
    for b in range(256):
        key = bytes((b, 255 - b, b ^ 0x5A, (b * 7) & 255))
        assert unmask(data, key) == reference(data, key), key


@needs_c
def test_c_mask_into_takes_a_writable_memoryview():
    """Any writable contiguous buffer (the Python fallback takes bytearrays only)."""
    base = payload(64)
    buf = bytearray(base)
    view = memoryview(buf)[5:50]
    _speedups.mask_into(view, 3, 40, KEYS[3])
    assert buf == base[:8] + reference(base[8:45], KEYS[3]) + base[45:]
    view.release()


def resizable(buf: bytearray) -> bool:
    """A bytearray with a buffer export still held can't be resized: this tells whether one leaked."""
    try:
        buf.append(0)
        buf.pop()
    except BufferError:
        return False
    return True


@pytest.mark.parametrize("name", IMPLS)
@pytest.mark.parametrize(
    "buf",
    [b"read-only bytes", memoryview(b"read-only view"), memoryview(bytearray(b"read-only")).toreadonly(), "str"],
    ids=["bytes", "bytes-view", "readonly-view", "str"],
)
def test_mask_into_refuses_a_read_only_buffer(name, buf):
    _, unmask_into, _ = impl(name)
    before = bytes(buf, "ascii") if isinstance(buf, str) else bytes(buf)
    with pytest.raises(TypeError):
        unmask_into(buf, 0, 4, KEYS[3])
    assert (bytes(buf, "ascii") if isinstance(buf, str) else bytes(buf)) == before


@needs_c
def test_c_mask_into_refuses_non_contiguous_views():
    buf = bytearray(payload(40))
    before = bytes(buf)
    with pytest.raises(TypeError, match="writable, contiguous bytes-like object is required, not memoryview"):
        _speedups.mask_into(memoryview(buf)[::2], 0, 4, KEYS[3])
    with pytest.raises(TypeError, match="contiguous bytes-like object is required, not memoryview"):
        _speedups.mask(memoryview(buf)[::2], KEYS[3])
    with pytest.raises(TypeError, match="contiguous bytes-like object is required, not memoryview"):
        _speedups.mask_after(b"", memoryview(buf)[::2], KEYS[3])
    assert buf == before and resizable(buf)


@pytest.mark.parametrize("name", IMPLS)
@pytest.mark.parametrize("start, stop", [(-1, 4), (0, 11), (5, 4), (11, 11), (0, 1 << 70), (-(1 << 70), 0)])
def test_mask_into_refuses_a_range_outside_the_buffer(name, start, stop):
    _, unmask_into, _ = impl(name)
    buf = bytearray(b"0123456789")
    with pytest.raises(ValueError, match="range"):
        unmask_into(buf, start, stop, KEYS[3])
    assert buf == b"0123456789"
    assert resizable(buf)


@pytest.mark.parametrize("name", IMPLS)
@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"], ids=len)
def test_a_key_is_four_bytes(name, key):
    unmask, unmask_into, mask_after = impl(name)
    buf = bytearray(b"0123456789")
    with pytest.raises(ValueError, match="4 bytes"):
        unmask(buf, key)
    with pytest.raises(ValueError, match="4 bytes"):
        unmask_into(buf, 0, 4, key)
    with pytest.raises(ValueError, match="4 bytes"):
        mask_after(buf, buf, key)
    assert buf == b"0123456789"
    assert resizable(buf)


@needs_c
def test_c_refuses_other_types_and_releases_what_it_took():
    """Every error path releases the buffers it had already taken (else the bytearray stays locked)."""
    head, data, key = bytearray(b"head"), bytearray(b"data"), bytearray(KEYS[3])
    with pytest.raises(TypeError, match="bytes-like"):
        _speedups.mask_after(head, "not bytes", key)
    with pytest.raises(TypeError, match="bytes-like"):
        _speedups.mask_after("not bytes", data, key)
    with pytest.raises(TypeError, match="bytes-like"):
        _speedups.mask(data, 1234)
    with pytest.raises(TypeError, match="bytes-like"):
        _speedups.mask(None, key)
    with pytest.raises(TypeError):
        _speedups.mask_into(data, "0", 4, key)
    with pytest.raises(TypeError):
        _speedups.mask_into(data, 0, 4.0, key)
    assert all(resizable(b) for b in (head, data, key))


@needs_c
@pytest.mark.parametrize(
    "function, args",
    [("mask", (b"ab",)), ("mask", (b"ab", b"abcd", b"")), ("mask_into", (bytearray(4), 0, 4)), ("mask_after", ())],
)
def test_c_argument_count_is_checked(function, args):
    with pytest.raises(TypeError, match="positional arguments"):
        getattr(_speedups, function)(*args)


@needs_c
def test_c_functions_hold_no_references():
    """No reference leaks on the success and error paths (a leak would grow the counts)."""
    data, key, buf = b"x" * 100, b"abcd", bytearray(100)
    before = sys.getrefcount(data), sys.getrefcount(key), sys.getrefcount(buf)
    for _ in range(1000):
        _speedups.mask(data, key)
        _speedups.mask_after(data, data, key)
        _speedups.mask_into(buf, 0, 100, key)
        with pytest.raises(ValueError):
            _speedups.mask_into(buf, 0, 101, key)
    assert (sys.getrefcount(data), sys.getrefcount(key), sys.getrefcount(buf)) == before


def test_threadws_uses_the_functions_speedups_names():
    if _frames.SPEEDUPS:
        assert (_frames.unmask, _frames.unmask_into, _frames.mask_after) == (
            _speedups.mask,
            _speedups.mask_into,
            _speedups.mask_after,
        )
    else:
        assert (_frames.unmask, _frames.unmask_into, _frames.mask_after) == (
            _frames.py_unmask,
            _frames.py_unmask_into,
            _frames.py_mask_after,
        )


def compiler_available() -> bool:
    """A C compiler and Python's headers: what setup.py needs to build the extension."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    return shutil.which(os.environ.get("CC", cc).split()[0]) is not None and os.path.exists(headers)


def test_c_path_is_active_where_a_compiler_exists():
    """`pip install -e .` (tests/run.sh) must have built the extension, or the suite would test the fallback only."""
    if not compiler_available():
        pytest.skip("no C compiler or Python headers here: the pure-Python fallback is expected")
    assert _speedups is not None, "a compiler exists but threadws._speedups was not built"
    assert _frames.SPEEDUPS == (os.environ.get("THREADWS_NO_SPEEDUPS", "") in ("", "0"))


@pytest.mark.parametrize("value, active", [("1", False), ("yes", False), ("0", True), ("", True), (None, True)])
def test_threadws_no_speedups_forces_the_fallback(value, active):
    env = {k: v for k, v in os.environ.items() if k != "THREADWS_NO_SPEEDUPS"}
    if value is not None:
        env["THREADWS_NO_SPEEDUPS"] = value
    code = "from threadws import _frames; print(_frames.SPEEDUPS, _frames.unmask.__name__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    speedups, function = out.stdout.split()
    assert speedups == str(active and _speedups is not None)
    assert function == ("mask" if speedups == "True" else "py_unmask")


@needs_c
def test_the_stub_matches_the_extension():
    """threadws/_speedups.pyi (what mypy sees) against the built module (mypy's stubtest)."""
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "threadws._speedups"], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stdout + out.stderr
