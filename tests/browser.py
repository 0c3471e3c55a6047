"""A page opened in a real browser: headless Chromium, driven over the Chrome DevTools Protocol (one websocket,
synchronous), for the tests that check report.html as a reader sees it.

    with Browser() as browser:
        page = browser.open(path)          # a file (or a URL); returns once it loaded and went quiet
        page.images                        # every <img>: src (its first characters), naturalWidth, ...
        page.problems()                    # console errors, uncaught exceptions, failed requests, broken images
        browser.screenshot(png_path)       # the whole page, not only the viewport

The page is opened offline: every http(s) request goes to a proxy that is not there, so it fails (and is reported in
`failed_requests`) instead of fetching anything; file: and data: URLs load as usual. Every request the page made is
in `requests`, so a test can also say that none went to the network at all.

The browser is Chromium or Chrome: $GAN_BENCH_CHROMIUM, else the first of chromium, chromium-browser, google-chrome
on PATH (.ci/start-chromium.sh installs Debian's). It runs with a profile of its own in a temporary folder, removed
afterwards, and it is always stopped when the `with` ends (its whole process group), however it ends.

As a script, for the README's screenshot:

    python tests/browser.py REPORT.html OUT.png [--width 1280]

writes a full-page PNG of REPORT.html, prints every problem found, and exits 1 if there was one.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LISTENING = re.compile(r"DevTools listening on (ws://\S+)")
# What a page sees of every <img>, after the page was scrolled through (lazy images load) and each image either
# loaded or failed. src is cut short: a data: URI of a figure is hundreds of kilobytes.
IMAGES_JS = """(async () => {
    const settled = img => img.complete ? null : new Promise(done => {
        img.addEventListener("load", done, {once: true});
        img.addEventListener("error", done, {once: true});
    });
    const step = Math.max(window.innerHeight, 100);
    for (let y = 0; y < document.documentElement.scrollHeight; y += step) {
        window.scrollTo(0, y);
        await new Promise(requestAnimationFrame);
    }
    window.scrollTo(0, 0);
    await Promise.race([Promise.all(Array.from(document.images, settled)),
                        new Promise(done => setTimeout(done, %(timeout_ms)d))]);
    return {
        readyState: document.readyState,
        title: document.title,
        images: Array.from(document.images, img => ({
            src: (img.currentSrc || img.src || "").slice(0, 100),
            srcLength: (img.currentSrc || img.src || "").length,
            alt: img.alt,
            complete: img.complete,
            naturalWidth: img.naturalWidth,
            naturalHeight: img.naturalHeight,
        })),
    };
})()"""


class BrowserError(RuntimeError):
    """The browser could not be started or driven (not: the page has problems, which PageReport lists)."""


def find_chromium() -> str | None:
    """The browser to use: $GAN_BENCH_CHROMIUM (when set, it or nothing), else the first candidate on PATH."""
    named = os.environ.get("GAN_BENCH_CHROMIUM")
    if named:
        return named if os.path.isfile(named) and os.access(named, os.X_OK) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_problem() -> str | None:
    """Why no browser test can run here, or None."""
    if os.environ.get("GAN_BENCH_CHROMIUM") and find_chromium() is None:
        return f"GAN_BENCH_CHROMIUM={os.environ['GAN_BENCH_CHROMIUM']} is not an executable file"
    if find_chromium() is None:
        return (f"no Chromium ({', '.join(CANDIDATES)} not on PATH, GAN_BENCH_CHROMIUM unset); install it with "
                ".ci/start-chromium.sh (as root) and eval its last line (.ci/run does)")
    try:
        import websocket  # websocket-client
    except ImportError as error:
        return f"no websocket client ({error}); pip install -e '.[test]'"
    if not hasattr(websocket, "create_connection"):  # another package of that name (websocket, not websocket-client)
        return f"{websocket.__file__} is not websocket-client's; pip install -e '.[test]'"
    return None


@dataclass
class PageReport:
    """What a page did when it was opened: what it loaded and what went wrong."""

    url: str
    ready_state: str = ""
    title: str = ""
    images: list[dict] = field(default_factory=list)  # src (first 100 characters), srcLength, naturalWidth, ...
    console_errors: list[str] = field(default_factory=list)  # console.error / console.assert, and the browser's own
    exceptions: list[str] = field(default_factory=list)  # uncaught, in scripts of the page
    failed_requests: list[str] = field(default_factory=list)  # "URL: net::ERR_..."
    requests: list[str] = field(default_factory=list)  # every URL the page asked for (first 200 characters), itself too

    @property
    def broken_images(self) -> list[dict]:
        return [image for image in self.images if not image["naturalWidth"]]

    def problems(self) -> list[str]:
        """Everything a reader would see go wrong, one line each; [] for a page that is fine."""
        found = [f"console error: {message}" for message in self.console_errors]
        found += [f"uncaught exception: {message}" for message in self.exceptions]
        found += [f"failed request: {request}" for request in self.failed_requests]
        found += [f"broken image (naturalWidth 0): {image['src']}{'…' if image['srcLength'] > 100 else ''}"
                  for image in self.broken_images]
        if self.ready_state != "complete":
            found.append(f"document.readyState is {self.ready_state!r}, not 'complete'")
        return found


class Browser:
    """Headless Chromium with one page (a tab), driven over the DevTools protocol. A context manager: the browser
    stops when the `with` ends."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900, timeout: float = 30.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError(chromium_problem() or "no Chromium")
        self.width, self.height, self.timeout = width, height, timeout
        self._process: subprocess.Popen | None = None
        self._profile: str | None = None
        self._socket = None
        self._session: str | None = None
        self._ids = itertools.count(1)
        self._events: list[dict] = []

    # ---------------------------------------------------------------- start and stop
    def __enter__(self) -> Browser:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        import websocket

        self._profile = tempfile.mkdtemp(prefix="gan-bench-chromium-")
        log_path = Path(self._profile, "stderr.log")
        with open(log_path, "wb") as log:  # a file, not a pipe: nobody reads it while the browser runs
            self._process = subprocess.Popen(
                [self.executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                 f"--user-data-dir={self._profile}", "--no-first-run", "--no-default-browser-check",
                 "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
                 # Offline: http(s) goes to a proxy on the discard port (nothing listens), loopback included.
                 "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                 f"--window-size={self.width},{self.height}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)  # its own process group: renderers and helpers are stopped with it
        url = self._devtools_url(log_path)
        self._socket = websocket.create_connection(url, timeout=self.timeout, suppress_origin=True)
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self._call(f"{domain}.enable")
        self._call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1,
                   mobile=False)

    def _devtools_url(self, log_path: Path) -> str:
        """The browser's websocket URL: from its 'DevTools listening on ws://…' line, or its DevToolsActivePort."""
        deadline = time.monotonic() + self.timeout
        port_file = Path(self._profile, "DevToolsActivePort")
        while time.monotonic() < deadline:
            found = LISTENING.search(log_path.read_text(errors="replace"))
            if found:
                return found.group(1)
            if port_file.is_file():
                lines = port_file.read_text().split()
                if len(lines) >= 2:
                    return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            if self._process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise BrowserError(f"{self.executable} exited ({self._process.returncode}) before it listened:\n{tail}")
            time.sleep(0.05)
        raise BrowserError(f"{self.executable} did not open its DevTools port in {self.timeout:g} s")

    def close(self) -> None:
        """Stops the browser (politely, then its whole process group) and removes its profile. Idempotent."""
        if self._socket is not None:
            try:
                self._send("Browser.close", session=False)
            except Exception:
                pass
            try:
                self._socket.close()
            except Exception:
                pass
            self._socket = None
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            try:  # helpers (zygote, renderers) may outlive the main process: the group goes too
                os.killpg(self._process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._process = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    # ---------------------------------------------------------------- protocol
    def _send(self, method: str, session: bool = True, **params) -> int:
        message = {"id": next(self._ids), "method": method, "params": params}
        if session and self._session:
            message["sessionId"] = self._session
        self._socket.send(json.dumps(message))
        return message["id"]

    def _receive(self, deadline: float) -> dict | None:
        """The next message, or None once `deadline` (time.monotonic()) passed. Events are kept in self._events."""
        import websocket

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self._socket.settimeout(remaining)
        try:
            message = json.loads(self._socket.recv())
        except websocket.WebSocketTimeoutException:
            return None
        if "method" in message:
            self._events.append(message)
        return message

    def _call(self, method: str, session: bool = True, **params) -> dict:
        """Sends one command and returns its result; events that come meanwhile are kept."""
        sent = self._send(method, session, **params)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if message is None:
                raise BrowserError(f"no answer to {method} in {self.timeout:g} s")
            if message.get("id") == sent:
                if "error" in message:
                    error = message["error"]
                    raise BrowserError(f"{method}: {error.get('message')} {error.get('data', '')}".rstrip())
                return message.get("result", {})

    def _wait_for(self, method: str, timeout: float) -> dict:
        """The first event `method` since self._events was cleared, waiting for it if it did not come yet (it may
        have come while a command waited for its answer)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self._events[seen:]:
                if event["method"] == method:
                    return event
            seen = len(self._events)
            if self._receive(deadline) is None:
                raise BrowserError(f"no {method} in {timeout:g} s")

    def _quiet(self, quiet: float, longest: float) -> None:
        """Reads events until none came for `quiet` seconds (at most `longest`): late console messages count."""
        end = time.monotonic() + longest
        while self._receive(min(end, time.monotonic() + quiet)) is not None:
            pass

    # ---------------------------------------------------------------- pages
    def open(self, target: str | os.PathLike, quiet: float = 0.3) -> PageReport:
        """Opens a file (a path) or a URL in the page, waits for its load event, scrolls through it and waits for
        every image to load or fail, then for `quiet` seconds without an event; returns what it did."""
        url = target if isinstance(target, str) and re.match(r"^[a-z]+:", target) else Path(target).resolve().as_uri()
        self._events.clear()
        navigated = self._call("Page.navigate", url=url)
        if navigated.get("errorText"):
            raise BrowserError(f"cannot open {url}: {navigated['errorText']}")
        self._wait_for("Page.loadEventFired", self.timeout)
        state = self.evaluate(IMAGES_JS % {"timeout_ms": int(self.timeout * 1000)})
        self._quiet(quiet, longest=self.timeout)
        report = PageReport(url=url, ready_state=state["readyState"], title=state["title"], images=state["images"])
        self._collect(report)
        return report

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (a promise is awaited), as JSON makes it."""
        result = self._call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:60]}…: {_exception_text(result['exceptionDetails'])}")
        return result["result"].get("value")

    def screenshot(self, path: str | os.PathLike) -> Path:
        """A PNG of the whole page (beyond the viewport too) at the browser's width."""
        metrics = self._call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": max(self.width, size["width"]), "height": size["height"], "scale": 1}
        shot = self._call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
        path = Path(path)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def _collect(self, report: PageReport) -> None:
        urls = {}
        for event in self._events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                report.console_errors.append(" ".join(_remote_text(arg) for arg in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                report.console_errors.append(f"{entry.get('text', '')} ({entry.get('url') or entry.get('source')})")
            elif method == "Runtime.exceptionThrown":
                report.exceptions.append(_exception_text(params["exceptionDetails"]))
            elif method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                urls[params["requestId"]] = url = url if len(url) <= 200 else url[:200] + "…"  # data: URIs are long
                report.requests.append(url)
            elif method == "Network.loadingFailed":
                reason = params.get("blockedReason") or params.get("errorText") or "failed"
                report.failed_requests.append(f"{urls.get(params['requestId'], params['requestId'])}: {reason}")


def _remote_text(value: dict) -> str:
    """A console argument (a Runtime.RemoteObject) as text."""
    if "value" in value:
        return value["value"] if isinstance(value["value"], str) else json.dumps(value["value"])
    return value.get("description") or value.get("unserializableValue") or value.get("type", "?")


def _exception_text(details: dict) -> str:
    exception = details.get("exception") or {}
    where = f" ({details.get('url') or 'inline'}:{details.get('lineNumber', 0) + 1})"
    return (exception.get("description") or details.get("text") or "exception").splitlines()[0] + where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A full-page screenshot of a page in headless Chromium, and every "
                                                 "console error, failed request and broken image it had.")
    parser.add_argument("page", help="an HTML file (or a URL), e.g. results/STUDY/report.html")
    parser.add_argument("png", help="where the screenshot goes")
    parser.add_argument("--width", type=int, default=1280, help="the viewport's width in CSS pixels (default 1280)")
    args = parser.parse_args(argv)
    with Browser(width=args.width) as browser:
        page = browser.open(args.page)
        browser.screenshot(args.png)
    print(f"{args.png}: {page.title or page.url}, {len(page.images)} images, {len(page.requests)} requests")
    for problem in page.problems():
        print(problem)
    return 1 if page.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
