"""A page opened in headless Chromium over the Chrome DevTools Protocol, on a pipe.

Chromium started with ``--remote-debugging-pipe`` reads protocol messages on its file
descriptor 3 and writes on 4, each a JSON object ended by a NUL byte: no driver binary, no
websocket client and no Python package beyond the standard library, only the browser. The
viewport is set exactly (``Emulation.setDeviceMetricsOverride``), so "the first screen" is the
first 1280 × 800 CSS pixels whatever the window around it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Names the browser goes by on the systems the tests run on (Debian's package first).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Seconds a page may take to load, and one protocol call to answer.
TIMEOUT = 60.0

#: What the page's script reports: viewport, every verdict sentence's box and every image's state.
INSPECT = """JSON.stringify({
  viewport: [window.innerWidth, window.innerHeight], scroll: [window.scrollX, window.scrollY],
  sentences: Array.from(document.querySelectorAll('[data-verdict]')).map(e => {
    const r = e.getBoundingClientRect(), s = getComputedStyle(e);
    return {key: e.dataset.verdict, text: e.textContent, top: r.top, bottom: r.bottom, left: r.left, right: r.right,
            visible: s.display !== 'none' && s.visibility !== 'hidden' && r.width > 0 && r.height > 0};
  }),
  images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth, alt: i.alt})),
  anchors: Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href')),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
})"""


def find_browser() -> str | None:
    """The path of a Chromium (or Chrome) on this machine, or None."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@dataclass
class Rendering:
    """What a page did in the browser: its inspection, console errors and a screenshot (PNG)."""

    inspection: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""

    def problems(self) -> list[str]:
        """Every way the page fails the first-screen check (empty: it passes)."""
        out = []
        width, height = self.inspection["viewport"]
        sentences = self.inspection["sentences"]
        if not sentences:
            out.append("no verdict sentence on the page")
        for s in sentences:
            if not s["visible"]:
                out.append(f"verdict sentence {s['key']!r} is not visible")
            elif s["top"] < 0 or s["bottom"] > height or s["left"] < 0 or s["right"] > width:
                out.append(f"verdict sentence {s['key']!r} is outside the first {width} x {height} screen "
                           f"(top {s['top']:.0f}, bottom {s['bottom']:.0f}, right {s['right']:.0f})")
        for image in self.inspection["images"]:
            if not image["complete"] or image["width"] == 0:
                out.append(f"image does not load: {image['alt'][:80]!r}")
            elif not image["alt"].strip():
                out.append("image without a text alternative")
        out += [f"console error: {e}" for e in self.errors]
        return out


class Chromium:
    """One headless Chromium, driven over its DevTools pipe; ``with Chromium() as browser: ...``."""

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or find_browser()
        if self.executable is None:
            raise FileNotFoundError(f"no Chromium found (looked for {', '.join(BROWSERS)})")
        self._buffer = b""
        self._next = 0

    def __enter__(self) -> "Chromium":
        self._profile = tempfile.TemporaryDirectory(prefix="fairsynth-chromium-")
        ours_read, theirs_write = os.pipe()  # the browser writes on its fd 4
        theirs_read, ours_write = os.pipe()  # the browser reads on its fd 3

        def descriptors() -> None:
            # In the child, before exec: the pipe's ends become fds 3 and 4 (moved out of the way
            # first, should either already be 3 or 4); dup2 leaves them inheritable, and every
            # other descriptor Python opened is closed at exec (close-on-exec by default).
            read, write = fcntl.fcntl(theirs_read, fcntl.F_DUPFD, 10), fcntl.fcntl(theirs_write, fcntl.F_DUPFD, 10)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self._process = subprocess.Popen(
            [self.executable, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={self._profile.name}", "about:blank"],
            close_fds=False, preexec_fn=descriptors, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(theirs_read)
        os.close(theirs_write)
        self._out = os.fdopen(ours_write, "wb", buffering=0)
        self._in = os.fdopen(ours_read, "rb", buffering=0)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.call("Browser.close")
        except (OSError, RuntimeError):
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._out.close()
        self._in.close()
        self._profile.cleanup()

    # the protocol ---------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = self._in.read(1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed its DevTools pipe (exit code {self._process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Send one command and return its result; the events that arrive meanwhile go to ``events``."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._out.write(json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            if events is not None:
                events.append(answer)

    # one page ---------------------------------------------------------------------------

    def render(self, page: Path, width: int = 1280, height: int = 800) -> Rendering:
        """Open ``page`` in a fresh tab with a ``width`` × ``height`` viewport, wait for its load event,
        and inspect it at the top, with its console errors and a screenshot of the first screen."""
        events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(method, session=session, events=events)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session, events)
        self.call("Page.navigate", {"url": page.resolve().as_uri()}, session, events)
        deadline = time.monotonic() + TIMEOUT
        while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session for e in events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{page} did not finish loading in {TIMEOUT:.0f} s")
            events.append(self._read())
        result = self.call("Runtime.evaluate", {"expression": INSPECT, "returnByValue": True}, session, events)
        inspection = json.loads(result["result"]["value"])
        shot = self.call("Page.captureScreenshot", {"format": "png"}, session, events)
        self.call("Target.closeTarget", {"targetId": target}, events=events)
        return Rendering(inspection, _errors(events, session), base64.b64decode(shot["data"]))


def _errors(events: list[dict[str, Any]], session: str) -> list[str]:
    """Console errors, uncaught exceptions and the browser's own error log entries (a failed load)."""
    out = []
    for event in events:
        if event.get("sessionId") != session:
            continue
        params = event.get("params") or {}
        if event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args") or []))
        elif event.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails") or {}
            out.append(str((details.get("exception") or {}).get("description") or details.get("text")))
        elif event.get("method") == "Log.entryAdded" and (params.get("entry") or {}).get("level") == "error":
            entry = params["entry"]
            out.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url') or ''}".strip())
    return out
