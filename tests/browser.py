"""A headless Chromium driven over the DevTools protocol, for the search-page tests.

Only what the tests need: open a page, run JavaScript, wait for a condition, click and drag
with real mouse events at an element's position, type with real key events, hand files to
a file input, take screenshots, and list every URL the page asked for. The browser is
Debian's chromium (scripts/setup_browser.sh), started here on a loopback debugging port
with its own profile folder and stopped by pid.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time

import websocket

from serverctl.proc import free_port


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, executable: str, profile_dir: str, width: int = 1280, height: int = 1000):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={self.port}",
             f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self._ids = itertools.count(1)
        self.events: list[dict] = []
        self.socket = self._connect(timeout=30.0)
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Network.enable")

    def _connect(self, timeout: float) -> websocket.WebSocket:
        import requests

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}")
            try:
                targets = requests.get(f"http://127.0.0.1:{self.port}/json/list", timeout=2).json()
                page = next(t for t in targets if t["type"] == "page")
                return websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
            except Exception as e:  # noqa: BLE001 - the browser is still starting
                last = e
                time.sleep(0.2)
        self.close()
        raise BrowserError(f"no DevTools endpoint on port {self.port} after {timeout}s: {last}")

    def close(self) -> None:
        try:
            if getattr(self, "socket", None) is not None:
                self.socket.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)

    def call(self, method: str, **params) -> dict:
        call_id = next(self._ids)
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:200]!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = ""):
        """Polls until the expression is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        status = self.evaluate("document.getElementById('status') && document.getElementById('status').textContent")
        raise BrowserError(f"timed out after {timeout}s waiting for {what or expression!r}; status line: {status!r}")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", 30, f"load of {url}")

    def center(self, selector: str) -> tuple[float, float]:
        rect = self.rect(selector)
        return rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2

    def rect(self, selector: str) -> dict:
        rect = self.evaluate(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            if (!el) return null;
            el.scrollIntoView({{block: "center"}});
            const r = el.getBoundingClientRect();
            return {{x: r.left, y: r.top, width: r.width, height: r.height}};
        }})()""")
        if rect is None:
            raise BrowserError(f"no element matches {selector!r}")
        return rect

    def _mouse(self, kind: str, x: float, y: float, buttons: int = 0) -> None:
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=buttons, clickCount=1,
                  pointerType="mouse")

    def click(self, selector: str) -> None:
        x, y = self.center(selector)
        self._mouse("mouseMoved", x, y)
        self._mouse("mousePressed", x, y, buttons=1)
        self._mouse("mouseReleased", x, y)

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
        self._mouse("mouseMoved", *start)
        self._mouse("mousePressed", *start, buttons=1)
        for i in range(1, steps + 1):
            t = i / steps
            self._mouse("mouseMoved", start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t, buttons=1)
        self._mouse("mouseReleased", *end)

    def type(self, selector: str, text: str) -> None:
        """Empties the field, focuses it and types the text as key input."""
        self.evaluate(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); el.value = ''; "
                      f"el.focus(); }})()")
        self.call("Input.insertText", text=text)

    def fill(self, selector: str, value: str) -> None:
        """Sets a field that takes no typed text (a date picker) as a person's pick would."""
        self.evaluate(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); el.value = "
                      f"{json.dumps(value)}; el.dispatchEvent(new Event('input', {{bubbles: true}})); "
                      f"el.dispatchEvent(new Event('change', {{bubbles: true}})); }})()")

    def press(self, key: str) -> None:
        codes = {"Enter": 13, "Escape": 27, "ArrowRight": 39, "ArrowLeft": 37, "Tab": 9}
        params = {"key": key, "code": key, "windowsVirtualKeyCode": codes[key]}
        if key == "Enter":
            params["text"] = "\r"
        self.call("Input.dispatchKeyEvent", type="keyDown", **params)
        self.call("Input.dispatchKeyEvent", type="keyUp", **{k: v for k, v in params.items() if k != "text"})

    def set_files(self, selector: str, paths: list[str]) -> None:
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise BrowserError(f"no element matches {selector!r}")
        self.call("DOM.setFileInputFiles", nodeId=node, files=[os.path.abspath(p) for p in paths])

    def screenshot(self, path: str) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]
