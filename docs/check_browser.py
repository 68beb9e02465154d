"""Look at the built documentation in a real browser, as a reader would.

Serves ``docs/_build/html`` on 127.0.0.1, opens pages in headless Chromium (Debian's
``chromium`` package), and for each page

* waits for MathJax to typeset, then checks that every maths element was rendered (no raw
  TeX left) and that every image loaded;
* records browser console errors, uncaught exceptions, failed requests and any request to
  a host other than the local server (the site must work offline);
* saves a screenshot (PNG) into ``--out``.

It talks to Chromium through the DevTools protocol with a small WebSocket client from the
standard library (no extra package). Exit status 0 when every page is clean, 1 otherwise;
it prints ``SKIP`` and exits 0 where no Chromium is installed.

Run::

    apt-get install chromium          # once, as root (Debian's package)
    make docs                         # build the site
    make docs-check                   # = python docs/check_browser.py docs/_build/html
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

DEFAULT_PAGES = (
    "index.html",
    "auto_examples/02_one_iht_step_is_a_cnn_layer.html",
    "api/generated/modelcs.theorem33_bound.html",
    "tutorials/tutorial_2_cnn_layer_is_one_iht_step.html",
)
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
    "--remote-debugging-port=0", "--remote-allow-origins=*", "--window-size=1280,1600",
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


# ------------------------------------------------------------------ a minimal WebSocket
class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, client masking."""

    def __init__(self, url: str, timeout: float = 60.0):
        parts = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        header = b""
        while b"\r\n\r\n" not in header:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            header += chunk
        head, self.buffer = header.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"WebSocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            data = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode in (0x9, 0xA):  # ping / pong: not sent by Chromium to clients
                continue
            message += data
            if b0 & 0x80:
                return message.decode()


class DevTools:
    """Commands and events of one page target."""

    def __init__(self, ws_url: str):
        self.ws = WebSocket(ws_url)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str, timeout_ms: int = 30000):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True, timeout=timeout_ms)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


# --------------------------------------------------------------------------- checks
WAIT_FOR_MATHJAX = """
(async () => {
  for (let i = 0; i < 200 && document.readyState !== 'complete'; i++)
    await new Promise(r => setTimeout(r, 50));
  const maths = document.querySelectorAll('.math');
  if (maths.length && window.MathJax && MathJax.startup && MathJax.startup.promise)
    await MathJax.startup.promise;
  await Promise.all([...document.images].map(img => img.complete ? null :
      new Promise(r => { img.onload = img.onerror = r; })));
  const raw = [...maths].filter(m => !m.querySelector('mjx-container'))
                        .map(m => m.textContent.trim().slice(0, 60));
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
                                     .map(i => i.getAttribute('src'));
  return {title: document.title, maths: maths.length,
          rendered: document.querySelectorAll('mjx-container').length,
          raw: raw, images: document.images.length, broken: broken,
          mathjax: !!(window.MathJax && MathJax.version),
          version: (window.MathJax && MathJax.version) || null};
})()
"""


def problems_from_events(events: list[dict], origin: str) -> list[str]:
    out = []
    for ev in events:
        method, p = ev["method"], ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(f"uncaught exception: {d.get('exception', {}).get('description') or d}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            out.append(f"console.{p['type']}: {args}")
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            e = p["entry"]
            out.append(f"console error ({e.get('source')}): {e.get('text')} {e.get('url', '')}")
        elif method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if url.startswith(("http://", "https://", "ws://", "wss://")) and not url.startswith(
                origin
            ):
                out.append(f"request leaves the local site: {url}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            out.append(f"failed request: {p.get('errorText')} (request {p.get('requestId')})")
        elif method == "Network.responseReceived" and p["response"]["status"] >= 400:
            out.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
    return out


def check_page(dt: DevTools, url: str, origin: str, shot: Path) -> tuple[dict, list[str]]:
    dt.events.clear()
    dt.call("Page.navigate", url=url)
    info = dt.evaluate(WAIT_FOR_MATHJAX)
    time.sleep(0.5)  # late console messages (fonts loaded by MathJax after typesetting)
    dt.evaluate("1")
    problems = problems_from_events(dt.events, origin)
    if info["raw"]:
        problems.append(f"{len(info['raw'])} maths element(s) not typeset: {info['raw'][:3]}")
    if info["maths"] and not info["mathjax"]:
        problems.append("the page has maths but MathJax did not load")
    if info["broken"]:
        problems.append(f"images that did not load: {info['broken']}")
    png = dt.call("Page.captureScreenshot", format="png")["data"]
    shot.write_bytes(base64.b64decode(png))
    return info, problems


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", nargs="?", default="docs/_build/html", help="built site")
    ap.add_argument("--out", default="docs/_build/screenshots", help="screenshot folder")
    ap.add_argument("--page", action="append", help="page to open (repeatable)")
    ap.add_argument("--chromium", default=None, help="browser executable")
    args = ap.parse_args(argv)

    chromium = args.chromium or find_chromium()
    if chromium is None:
        print("SKIP: no Chromium found (install Debian's package: apt-get install chromium)")
        return 0
    site = Path(args.site)
    if not (site / "index.html").exists():
        print(f"error: {site}/index.html does not exist; build the site first (make docs)")
        return 1
    pages = args.page or list(DEFAULT_PAGES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    server, origin = serve(site)
    profile = tempfile.mkdtemp(prefix="modelcs-chromium-")
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    failures = 0
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            if proc.poll() is not None:
                raise RuntimeError(f"Chromium exited with status {proc.returncode}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t.get("type") == "page")
        dt = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            dt.call(f"{domain}.enable")
        dt.call("Emulation.setDeviceMetricsOverride", width=1280, height=1600,
                deviceScaleFactor=1, mobile=False)
        for rel in pages:
            if not (site / rel).exists():
                print(f"FAIL {rel}: not in the built site")
                failures += 1
                continue
            shot = out / (rel.replace("/", "__").removesuffix(".html") + ".png")
            info, problems = check_page(dt, origin + rel, origin, shot)
            status = "FAIL" if problems else "ok"
            failures += bool(problems)
            print(f"{status:4} {rel}: '{info['title']}', {info['maths']} maths elements "
                  f"({info['rendered']} typeset by MathJax {info.get('version') or '-'}), "
                  f"{info['images']} images; screenshot {shot}")
            for p in problems:
                print(f"       {p}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"{len(pages) - failures}/{len(pages)} pages clean")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
