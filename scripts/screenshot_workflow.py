"""Screenshot of an example workflow in the real ComfyUI web UI (for the README), headless Chromium.

Starts a ComfyUI server with this pack (CPU, temporary base directory), opens its web UI in
Debian's Chromium (`apt-get install -y chromium`), loads the workflow through the frontend's own
`app.loadGraphData`, optionally queues it from the page (`--run`: the node previews then show the
priors and the result; needs the shipped default model and MobileSAM), and saves a PNG. Chromium is
driven over the DevTools protocol with aiohttp (in ComfyUI's venv), so nothing else is needed.

    source ~/.cache/cugd-comfyui/env.sh
    "$COMFYUI_PYTHON" scripts/screenshot_workflow.py                     # -> docs/workflow.png
    "$COMFYUI_PYTHON" scripts/screenshot_workflow.py --run --workflow cugd_basic -o docs/workflow.png

The input image is the project's `assets/sample_dark.png`, or a dark scene drawn here (never a dataset photo).
`--prompt-out FILE` also writes the API prompt that the frontend's `graphToPrompt` makes of the
workflow (the reference for tests/comfy_client.ui_to_api).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0"]
# settings the frontend would otherwise greet a new user with (template browser, release notes)
UI_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Release.Version": "99.0.0",
               "Comfy.Release.Timestamp": int(time.time() * 1000), "Comfy.Release.Status": "skipped",
               "Comfy.Minimap.Visible": False, "Comfy.NodeBadge.NodeSourceBadgeMode": "Hide all",
               "Comfy.Graph.CanvasInfo": False}


def synthetic_dark_scene(path: Path, w: int = 384, h: int = 256) -> Path:
    """A dark 'room' drawn with numpy: a wall gradient, a window, a table and a lamp."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.35 + 0.2 * xx / w, 0.3 + 0.15 * yy / h, 0.25 + 0.1 * (1 - xx / w)], -1)
    img[int(h * .62):, :] = [0.45, 0.3, 0.2]  # floor
    img[int(h * .15):int(h * .45), int(w * .62):int(w * .88)] = [0.55, 0.7, 0.9]  # window
    img[int(h * .5):int(h * .58), int(w * .12):int(w * .5)] = [0.5, 0.25, 0.1]  # table top
    lamp = ((yy - h * .35) ** 2 + (xx - w * .25) ** 2) < (h * .07) ** 2
    img[lamp] = [0.95, 0.85, 0.5]
    noise = np.random.default_rng(0).normal(0, 0.01, img.shape)
    dark = np.clip(img * 0.12 + noise, 0, 1)
    Image.fromarray((dark * 255).round().astype(np.uint8)).save(path)
    return path


class CDP:
    """The smallest DevTools-protocol client: send a command, await its result."""

    def __init__(self, ws):
        self.ws, self.next_id, self.pending = ws, 0, {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        async for msg in self.ws:
            data = json.loads(msg.data)
            fut = self.pending.pop(data.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(data)

    async def send(self, method: str, timeout: float = 60, **params):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        data = await asyncio.wait_for(fut, timeout)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return data["result"]

    async def js(self, expression: str, timeout: float = 60):
        res = await self.send("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                              returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression[:80]!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def wait_js(self, expression: str, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if await self.js(expression):
                    return
            except RuntimeError:
                pass
            await asyncio.sleep(0.25)
        raise TimeoutError(f"timed out waiting for {what}")


class WebUI:
    """Headless Chromium showing a ComfyUI web UI, driven over the DevTools protocol.

    `async with WebUI(url) as ui:` then `await ui.load(workflow, name)`, `await ui.graph_to_prompt()`,
    `await ui.run()`, `await ui.screenshot(path)`.
    """

    def __init__(self, url: str, *, width: int = 1600, height: int = 900, chromium: str | None = None,
                 timeout: float = 120.0):
        self.url, self.width, self.height, self.timeout = url, width, height, timeout
        self.chromium = chromium or shutil.which("chromium") or "chromium"

    async def __aenter__(self) -> "WebUI":
        import aiohttp

        self.profile = Path(tempfile.mkdtemp(prefix="cugd-chromium-"))  # an empty --user-data-dir
        self.proc = subprocess.Popen([self.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      f"--window-size={self.width},{self.height}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = self.profile / "DevToolsActivePort"
            end = time.monotonic() + 30
            while not port_file.is_file() or not port_file.read_text().strip():
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"Chromium ({self.chromium}) did not start (apt-get install -y chromium)")
                await asyncio.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            self.http = aiohttp.ClientSession()
            async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
                page = next(t for t in await r.json() if t["type"] == "page")
            self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
            self.cdp = CDP(self.ws)
            await self.cdp.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                                deviceScaleFactor=1, mobile=False)
            await self.cdp.send("Page.enable")
            await self.cdp.send("Page.addScriptToEvaluateOnNewDocument",
                                source="localStorage.setItem('vueNodesBannerDismissed', 'true')")
            await self.cdp.send("Page.navigate", url=self.url)
            await self.cdp.wait_js("!!(window.app && window.app.graph && window.app.canvas)", self.timeout,
                                   "the web UI")
            return self
        except BaseException:
            await self.__aexit__()
            raise

    async def __aexit__(self, *exc) -> None:
        if getattr(self, "cdp", None):
            self.cdp.reader.cancel()
        if getattr(self, "ws", None):
            await self.ws.close()
        if getattr(self, "http", None):
            await self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def load(self, workflow: dict, name: str) -> None:
        """Open the workflow in a tab named `name`, as dropping the file onto the UI does."""
        await self.cdp.js(f"app.loadGraphData({json.dumps(workflow)}, true, true, {json.dumps(name)})")
        await self.cdp.wait_js(f"app.graph._nodes.length == {len(workflow['nodes'])}", 30, "the workflow")

    async def graph_to_prompt(self) -> dict:
        """The API prompt the frontend queues for the open workflow (without the `_meta` titles)."""
        prompt = await self.cdp.js("app.graphToPrompt().then(p => p.output)")
        return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}

    async def run(self) -> None:
        """Queue the open workflow from the page (the Run button) and wait until it finished."""
        await self.cdp.js("window.__cugd = null; app.api.addEventListener('execution_success', () => "
                          "{ window.__cugd = 'ok' }); app.api.addEventListener('execution_error', e => "
                          "{ window.__cugd = JSON.stringify(e.detail) }); true")
        await self.cdp.js("app.queuePrompt(0, 1)")
        await self.cdp.wait_js("window.__cugd", self.timeout, "the run")
        result = await self.cdp.js("window.__cugd")
        if result != "ok":
            raise RuntimeError(f"the workflow failed in the UI: {result[:2000]}")
        await asyncio.sleep(1.5)  # let the previews load

    async def screenshot(self, out: Path) -> None:
        await self.cdp.js("document.querySelectorAll('.p-toast-message, .p-dialog-mask').forEach(e => e.remove()); "
                          "app.extensionManager.command.execute('Comfy.Canvas.FitView'); true")
        await asyncio.sleep(1.0)
        shot = await self.cdp.send("Page.captureScreenshot", format="png")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.png")
        tmp.write_bytes(base64.b64decode(shot["data"]))
        os.replace(tmp, out)


async def capture(url: str, workflow: dict, name: str, out: Path, *, width: int, height: int, run: bool,
                  prompt_out: Path | None, chromium: str, timeout: float) -> None:
    async with WebUI(url, width=width, height=height, chromium=chromium, timeout=timeout) as ui:
        await ui.load(workflow, name)
        if prompt_out is not None:
            prompt_out.write_text(json.dumps(await ui.graph_to_prompt(), indent=1, sort_keys=True) + "\n")
        if run:
            await ui.run()
        await ui.screenshot(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workflow", default="cugd_basic", help="name in example_workflows/ (default: cugd_basic)")
    ap.add_argument("-o", "--out", type=Path, default=REPO / "docs" / "workflow.png")
    ap.add_argument("--run", action="store_true", help="queue the workflow from the page before the screenshot")
    ap.add_argument("--url", help="use this running ComfyUI instead of starting one")
    ap.add_argument("--prompt-out", type=Path, help="also write the frontend's API prompt of the workflow here")
    ap.add_argument("--size", default="1600x900", help="viewport WxH")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    workflow = json.loads((REPO / "example_workflows" / f"{args.workflow}.json").read_text())

    from tests.comfy_client import ComfyClient
    from tests.comfy_env import prepare_base, start_server

    server, base = None, None
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            base = prepare_base(Path(tempfile.mkdtemp(prefix="cugd-screenshot-")))
            server = start_server(base)
            url = server.url
        client = ComfyClient(url)
        sample = REPO / "assets" / "sample_dark.png"  # the project's own sample, else one drawn here
        scene = sample if sample.is_file() else synthetic_dark_scene(Path(tempfile.mkdtemp()) / "scene.png")
        for node in workflow["nodes"]:
            if node["type"] == "LoadImage":
                client.upload_image(str(scene), node["widgets_values"][0])
        for key, value in UI_SETTINGS.items():
            client.post_json(f"/settings/{key}", value)
        asyncio.run(capture(url, workflow, args.workflow, args.out, width=width, height=height, run=args.run,
                            prompt_out=args.prompt_out, chromium=args.chromium, timeout=args.timeout))
    finally:
        if server is not None:
            server.stop()
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
