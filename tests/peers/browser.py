"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium.

Small API for interop tests that run a page's JavaScript WebSocket against a
loopback server::

    from tests.peers.browser import open_browser, require_browser

    require_browser()                      # installs Chromium if needed, else raises
    with open_browser() as b:
        b.get(f"http://127.0.0.1:{port}/page.html")
        result = b.wait_for("window.__result", timeout=10)
        print(b.console_log())

The browser never reaches past loopback: every non-loopback request goes to a
dead proxy (``--proxy-server=127.0.0.1:9``; Chromium always bypasses proxies for
localhost/127.0.0.0/8/[::1]), background/component/sync traffic is switched off,
and Selenium Manager is never run (explicit driver path + ``SE_OFFLINE``).

Must run as root?  No, but as root Chromium needs ``--no-sandbox`` (always
passed here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..polling import poll as poll_until

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "SELENIUM_PIN",
    "Browser",
    "BrowserUnavailable",
    "ensure_browser",
    "open_browser",
    "require_browser",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_SCRIPT = Path(__file__).resolve().parent / "install_browser.sh"
# Newest selenium installable from the package index this project uses that
# works with Debian 12's chromium/chromedriver 156 (4.52.0 needs a certifi
# release the index does not have yet).
SELENIUM_PIN = "selenium==4.51.0"

# Chromium command-line flags.  --no-sandbox is required when running as root
# (CI runs as root); --disable-dev-shm-usage avoids crashes with a small /dev/shm.
BASE_FLAGS: tuple[str, ...] = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    (
        "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
        "AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,"
        "NetworkTimeServiceQuerying,AcceptCHFrame"
    ),
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
)
# Everything that is not loopback goes to a proxy on the discard port, where
# nothing listens: such requests fail at once with ERR_PROXY_CONNECTION_FAILED.
NETWORK_BLOCK_FLAGS: tuple[str, ...] = (
    "--proxy-server=http://127.0.0.1:9",
    # No name lookups except loopback (the rules also apply to IP literals).
    (
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE *.localhost , "
        "EXCLUDE 127.* , EXCLUDE ::1 , EXCLUDE [::1]"
    ),
)


class BrowserUnavailable(RuntimeError):
    """Chromium, chromedriver or selenium is missing and could not be installed."""


def _selenium_version() -> str | None:
    try:
        import selenium
    except ImportError:
        return None
    return getattr(selenium, "__version__", "unknown")


def ensure_browser(*, install: bool = True, timeout: float = 900.0) -> None:
    """Make sure Chromium, chromedriver and selenium are usable.

    When ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` is missing and
    ``install`` is true, runs ``install_browser.sh`` (apt-get, needs root).
    Raises :class:`BrowserUnavailable` saying why when something is still
    missing.
    """
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.is_file() and os.access(p, os.X_OK))]
    if missing and install:
        bash = shutil.which("bash")
        if bash is None:
            raise BrowserUnavailable(f"{', '.join(missing)} missing and bash not found to run {INSTALL_SCRIPT}")
        try:
            proc = subprocess.run(
                [bash, str(INSTALL_SCRIPT)],
                check=False,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrowserUnavailable(f"{INSTALL_SCRIPT} timed out after {timeout:.0f}s") from exc
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-4000:]
            raise BrowserUnavailable(
                f"{', '.join(missing)} missing and {INSTALL_SCRIPT} failed (exit {proc.returncode}):\n{tail}"
            )
        missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.is_file() and os.access(p, os.X_OK))]
    if missing:
        raise BrowserUnavailable(
            f"{', '.join(missing)} missing; run `bash {INSTALL_SCRIPT}` "
            "(Debian: apt-get install chromium chromium-driver)"
        )
    if _selenium_version() is None:
        raise BrowserUnavailable(f"the selenium package is not installed: pip install {SELENIUM_PIN}")


def require_browser(*, install: bool = True) -> None:
    """Pytest helper: call at the start of a browser test or fixture.

    Never skips silently.  If the browser can't be made available this raises
    :class:`BrowserUnavailable` (the test errors with the reason).  Only on a
    developer machine that sets ``THREADWS_ALLOW_BROWSER_SKIP=1`` and is not CI
    (``CI`` unset/false) does it call ``pytest.skip`` with the reason instead.
    """
    try:
        ensure_browser(install=install)
    except BrowserUnavailable as exc:
        in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
        if os.environ.get("THREADWS_ALLOW_BROWSER_SKIP") == "1" and not in_ci:
            import pytest

            pytest.skip(f"browser unavailable: {exc}")
        raise


class Browser:
    """A running headless Chromium session.  Create with :func:`open_browser`.

    ``driver`` is the underlying selenium WebDriver for anything not wrapped here.
    """

    def __init__(self, driver: Any, tmp_root: Path) -> None:
        self.driver = driver
        self.tmp_root = tmp_root
        self.user_data_dir = tmp_root / "profile"
        self.chromedriver_log = tmp_root / "chromedriver.log"
        self._console: list[dict[str, Any]] = []
        self._closed = False

    # -- navigation / scripts -------------------------------------------------
    def get(self, url: str) -> None:
        """Load ``url`` in the current window (waits for the load event)."""
        self.driver.get(url)

    def execute(self, js: str, *args: Any) -> Any:
        """Run ``js`` as the body of a function in the page and return its
        ``return`` value (JSON-like values come back as Python objects).
        ``arguments[0..]`` are ``args``."""
        return self.driver.execute_script(js, *args)

    def execute_async(self, js: str, *args: Any, timeout: float = 30.0) -> Any:
        """Run ``js`` with a callback as the last argument
        (``arguments[arguments.length - 1](value)``) and return ``value``."""
        self.driver.set_script_timeout(timeout)
        return self.driver.execute_async_script(js, *args)

    def evaluate(self, js_expr: str) -> Any:
        """Return the value of the JavaScript expression ``js_expr``."""
        return self.driver.execute_script(f"return ({js_expr.strip().rstrip(';')});")

    def wait_for(self, js_expr: str, timeout: float = 10.0, poll: float = 0.05) -> Any:
        """Poll until the JS expression ``js_expr`` is truthy; return its value.

        Exceptions thrown while evaluating count as falsy.  On the deadline
        raises :class:`TimeoutError` with the last value/error and the tail of
        the page's console log.
        """
        from selenium.common.exceptions import JavascriptException

        last: Any = None
        last_err: str | None = None

        def check() -> Any:
            nonlocal last, last_err
            try:
                last, last_err = self.evaluate(js_expr), None
            except JavascriptException as exc:
                last_err = exc.msg
                return None
            return last

        value = poll_until(check, timeout, poll)
        if value:
            return value
        tail = self.console_log()[-20:]
        raise TimeoutError(
            f"`{js_expr}` not truthy after {timeout}s (last value {last!r}"
            + (f", last error {last_err!r}" if last_err else "")
            + f"); console: {tail!r}"
        )

    # -- windows --------------------------------------------------------------
    @property
    def window_handles(self) -> list[str]:
        return list(self.driver.window_handles)

    @property
    def current_window(self) -> str:
        return self.driver.current_window_handle

    def new_window(self, url: str | None = None, kind: str = "window") -> str:
        """Open a new top-level window (``kind="tab"`` for a tab), switch to it,
        optionally load ``url``, and return its handle."""
        self.driver.switch_to.new_window(kind)
        handle = self.driver.current_window_handle
        if url is not None:
            self.get(url)
        return handle

    def switch_to(self, handle: str) -> None:
        """Make window ``handle`` the current one."""
        self.driver.switch_to.window(handle)

    def close_window(self, handle: str | None = None) -> None:
        """Close window ``handle`` (default: current) and switch to a remaining one."""
        if handle is not None:
            self.switch_to(handle)
        self.driver.close()
        rest = self.window_handles
        if rest:
            self.switch_to(rest[0])

    # -- diagnostics ----------------------------------------------------------
    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Save a PNG of the current window's viewport to ``path``."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if not self.driver.save_screenshot(str(p)):
            raise RuntimeError(f"screenshot to {p} failed")
        return p

    def console_log(self) -> list[dict[str, Any]]:
        """All console messages (``console.log`` etc., uncaught errors, failed
        loads) seen so far, as ``{"level", "message", "source", "timestamp"}``.
        Chromium hands each entry out only once; this keeps the whole list."""
        with contextlib.suppress(Exception):  # session gone: keep what we have
            self._console.extend(self.driver.get_log("browser"))
        return list(self._console)

    # -- lifetime -------------------------------------------------------------
    def close(self) -> None:
        """Quit Chromium and chromedriver and remove the temporary profile."""
        if self._closed:
            return
        self._closed = True
        try:
            self.driver.quit()
        finally:
            # Chromium's last child processes may still write to the profile for a moment.
            def removed() -> bool:
                shutil.rmtree(self.tmp_root, ignore_errors=True)
                return not self.tmp_root.exists()

            poll_until(removed, 2.0, 0.1)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; prefer close()/with
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()


def open_browser(
    *,
    window_size: tuple[int, int] = (1280, 800),
    extra_args: Iterable[str] = (),
    block_network: bool = True,
    page_load_timeout: float = 30.0,
    install: bool = True,
) -> Browser:
    """Start headless Chromium via chromedriver and return a :class:`Browser`.

    Calls :func:`ensure_browser` first (``install`` lets it apt-get Chromium).
    ``block_network`` (default) sends all non-loopback traffic to a dead proxy.
    ``extra_args`` are appended to the Chromium flags.  A fresh profile in a
    temporary ``--user-data-dir`` (and the chromedriver log next to it) is
    removed by :meth:`Browser.close`.
    """
    ensure_browser(install=install)
    # Selenium Manager would download drivers/browsers; it is skipped anyway
    # because the driver path is explicit, but make sure it stays offline.
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    tmp_root = Path(tempfile.mkdtemp(prefix="threadws-chromium-"))
    user_data_dir = tmp_root / "profile"
    user_data_dir.mkdir()
    chromedriver_log = tmp_root / "chromedriver.log"

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in BASE_FLAGS:
        options.add_argument(flag)
    if block_network:
        for flag in NETWORK_BLOCK_FLAGS:
            options.add_argument(flag)
    options.add_argument(f"--window-size={window_size[0]},{window_size[1]}")
    options.add_argument(f"--user-data-dir={user_data_dir}")
    for flag in extra_args:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})

    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(chromedriver_log))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except Exception as exc:
        log = ""
        try:
            log = chromedriver_log.read_text(errors="replace")[-4000:]
        except OSError:
            pass
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise BrowserUnavailable(f"could not start Chromium: {exc}\nchromedriver log tail:\n{log}") from exc
    driver.set_page_load_timeout(page_load_timeout)
    return Browser(driver, tmp_root)
