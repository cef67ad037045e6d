"""A small stdlib client for a running ComfyUI server, and UI-format -> API-format conversion.

`ComfyClient` speaks ComfyUI's HTTP API (`/prompt`, `/history`, `/object_info`, `/upload/image`,
`/view`, `/interrupt`) and reads its websocket events (`/ws`). `ui_to_api` turns a workflow saved
by the web UI into the API prompt that the frontend's `graphToPrompt` would queue: ComfyUI 0.3.75
has no server-side converter. Stdlib only, so it runs with any Python.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

# -- UI format -> API format --------------------------------------------------------------------------
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MUTED, BYPASSED = 2, 4
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "upload")


class ConversionError(ValueError):
    pass


def _spec_type(spec) -> Any:
    return spec[0] if isinstance(spec, (list, tuple)) and spec else spec


def _spec_extra(spec) -> dict:
    return spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}


def widget_inputs(info: dict) -> list[tuple[str, int]]:
    """(name, extra values after it) of a node's widget inputs in the order the frontend lays them out.

    Combos (a list of options or "COMBO"), INT, FLOAT, STRING and BOOLEAN are widgets unless
    `forceInput`; seeds (`control_after_generate`, or the legacy names `seed`/`noise_seed`) and
    upload combos are followed by one more value in `widgets_values` that the server never sees.
    """
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items() if k != "hidden"}
    out = []
    for name in list(order.get("required", [])) + list(order.get("optional", [])):
        spec = specs[name]
        typ, extra = _spec_type(spec), _spec_extra(spec)
        if not (isinstance(typ, list) or typ in WIDGET_TYPES) or extra.get("forceInput"):
            continue
        more = 0
        if typ in ("INT", "COMBO") or isinstance(typ, list):
            control = extra.get("control_after_generate")
            if control or (typ == "INT" and control is None and name in ("seed", "noise_seed")):
                more = 1
        if any(extra.get(f) for f in UPLOAD_FLAGS):
            more = 1
        out.append((name, more))
    return out


def _links(workflow: dict) -> dict[int, tuple]:
    """link id -> (from_node, from_slot, to_node, to_slot, type), from the list or the object form."""
    out = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            out[int(link["id"])] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                                    link.get("type"))
        else:
            out[int(link[0])] = tuple(link[1:6])
    return out


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow (what Save writes) to an API prompt, using `/object_info`.

    Notes and muted nodes are dropped; Reroutes, bypassed nodes and PrimitiveNodes are resolved
    through. Subgraphs are not supported (the pack's workflows use none).
    """
    if "nodes" not in workflow or "links" not in workflow:
        raise ConversionError("not a UI-format workflow (no 'nodes'/'links'); API prompts need no conversion")
    if workflow.get("definitions", {}).get("subgraphs"):
        raise ConversionError("subgraphs are not supported")
    nodes = {int(n["id"]): n for n in workflow["nodes"]}
    links = _links(workflow)

    def source(link_id, want_type=None, seen=()):
        """The (node id, slot) that really feeds `link_id`, or ("value", v) for a PrimitiveNode."""
        if link_id is None or int(link_id) not in links:
            return None
        from_id, from_slot, _, _, ltype = links[int(link_id)]
        node = nodes[int(from_id)]
        if int(from_id) in seen:
            raise ConversionError(f"link cycle through node {from_id}")
        if node["type"] == "Reroute":
            return source(node["inputs"][0].get("link"), want_type or ltype, seen + (int(from_id),))
        if node["type"] == "PrimitiveNode":
            return ("value", (node.get("widgets_values") or [None])[0])
        if node.get("mode", 0) == MUTED:
            return None
        if node.get("mode", 0) == BYPASSED:  # pass through the first input of the same type
            t = want_type or ltype
            for inp in node.get("inputs", []):
                if inp.get("type") == t and inp.get("link") is not None:
                    return source(inp["link"], t, seen + (int(from_id),))
            return None
        return (str(from_id), int(from_slot))

    prompt: dict[str, Any] = {}
    for nid, node in sorted(nodes.items()):
        ntype = node["type"]
        if ntype in FRONTEND_ONLY or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        if ntype not in object_info:
            raise ConversionError(f"node {nid} has type {ntype!r}, which this server does not know "
                                  "(missing custom node pack?)")
        info = object_info[ntype]
        inputs: dict[str, Any] = {}
        linked = {inp["name"]: inp.get("link") for inp in node.get("inputs", []) if inp.get("link") is not None}
        values = node.get("widgets_values") or []
        if isinstance(values, dict):
            for name, _more in widget_inputs(info):
                if name in values:
                    inputs[name] = values[name]
        else:
            i = 0
            for name, more in widget_inputs(info):
                if i < len(values):
                    inputs[name] = values[i]
                i += 1 + more
        for name, link_id in linked.items():
            src = source(link_id)
            if src is None:
                inputs.pop(name, None)
            elif src[0] == "value":
                inputs[name] = src[1]
            else:
                inputs[name] = [src[0], src[1]]
        prompt[str(nid)] = {"class_type": ntype, "inputs": inputs}
    return prompt


# -- HTTP + websocket client --------------------------------------------------------------------------
class ComfyError(RuntimeError):
    def __init__(self, message: str, payload: Any = None):
        super().__init__(message)
        self.payload = payload


class ComfyClient:
    def __init__(self, base_url: str, client_id: str | None = None, timeout: float = 30.0):
        self.base = base_url.rstrip("/")
        self.client_id = client_id or str(uuid.uuid4())
        self.timeout = timeout

    # plain HTTP
    def request(self, path: str, data: bytes | None = None, headers: dict | None = None,
                method: str | None = None) -> tuple[int, bytes, dict]:
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers or {})

    def get_json(self, path: str) -> Any:
        status, body, _ = self.request(path)
        if status != 200:
            raise ComfyError(f"GET {path}: HTTP {status}: {body[:300]!r}")
        return json.loads(body)

    def post_json(self, path: str, payload: Any) -> tuple[int, Any]:
        status, body, _ = self.request(path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        try:
            return status, json.loads(body) if body else None
        except json.JSONDecodeError:
            return status, body.decode(errors="replace")

    def object_info(self, node: str | None = None) -> dict:
        return self.get_json("/object_info" + (f"/{urllib.parse.quote(node)}" if node else ""))

    def queue(self, prompt: dict, partial: bool = False) -> str:
        """POST /prompt; returns the prompt id, or raises ComfyError with the server's node_errors.

        The server accepts a prompt when at least one output node validates and silently drops the
        others (node_errors lists them); unless `partial`, that is an error here too.
        """
        status, body = self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if status != 200 or (body.get("node_errors") and not partial):
            raise ComfyError(f"/prompt refused (some of) it (HTTP {status}): {json.dumps(body)[:2000]}", body)
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 120.0, poll: float = 0.2) -> dict:
        """The /history entry once the prompt finished (success, error or interrupted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get_json(f"/history/{prompt_id}")
            entry = hist.get(prompt_id)
            if entry and (entry.get("status", {}).get("completed") or
                          entry.get("status", {}).get("status_str") == "error"):
                return entry
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, prompt: dict, timeout: float = 120.0) -> dict:
        """Queue and wait; raise ComfyError with the execution error unless it succeeded."""
        entry = self.wait(self.queue(prompt), timeout)
        if entry["status"].get("status_str") != "success":
            msgs = [m for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
            detail = msgs[0][1] if msgs else entry["status"]
            raise ComfyError(f"prompt failed: {json.dumps(detail)[:3000]}", entry)
        return entry

    def upload_image(self, path: str, name: str | None = None) -> dict:
        boundary = uuid.uuid4().hex
        name = name or os.path.basename(path)
        with open(path, "rb") as f:
            content = f.read()
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + content + \
               (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue"
                f"\r\n--{boundary}--\r\n").encode()
        status, resp, _ = self.request("/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200:
            raise ComfyError(f"upload of {path} failed: HTTP {status} {resp[:300]!r}")
        return json.loads(resp)

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        status, body, _ = self.request(f"/view?{q}")
        if status != 200:
            raise ComfyError(f"/view {filename}: HTTP {status}")
        return body

    def interrupt(self) -> None:
        self.request("/interrupt", b"{}", {"Content-Type": "application/json"}, method="POST")

    def events(self) -> "EventListener":
        return EventListener(self.base, self.client_id)


class EventListener:
    """Collects the websocket JSON events of one client id in a background thread (RFC 6455, text only)."""

    def __init__(self, base_url: str, client_id: str):
        u = urllib.parse.urlparse(base_url)
        self.host, self.port = u.hostname, u.port or 80
        self.path = f"/ws?clientId={urllib.parse.quote(client_id)}"
        self.messages: list[dict] = []
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "EventListener":
        s = socket.create_connection((self.host, self.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1)
            if not chunk:
                raise ComfyError("websocket handshake failed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ComfyError(f"websocket handshake refused: {head[:200]!r}")
        s.settimeout(0.5)
        self._sock = s
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            if self._stop.is_set():
                raise EOFError
            try:
                chunk = self._sock.recv(n - len(buf))
            except socket.timeout:
                continue
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                b0, b1 = self._recv_exact(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", self._recv_exact(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self._recv_exact(8))[0]
                payload = self._recv_exact(n)
                if b0 & 0x0F == 1:  # text frame (binary frames are preview images)
                    self.messages.append(json.loads(payload))
                elif b0 & 0x0F == 8:  # close
                    return
        except (EOFError, OSError):
            return

    def of_type(self, kind: str) -> list[dict]:
        return [m["data"] for m in list(self.messages) if m.get("type") == kind]

    def wait_for(self, predicate, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            msgs = list(self.messages)
            for m in msgs[seen:]:
                if predicate(m):
                    return m
            seen = len(msgs)
            time.sleep(0.05)
        raise TimeoutError("websocket event not seen in time")

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        if self._sock:
            self._sock.close()


def inprocess_object_info(names=None) -> dict:
    """`/object_info` computed in-process (needs ComfyUI importable and the pack loaded), same shape
    as the server's for what the converter reads: input, input_order, output, output_name."""
    import nodes

    out = {}
    for name in names or list(nodes.NODE_CLASS_MAPPINGS):
        cls = nodes.NODE_CLASS_MAPPINGS[name]
        if hasattr(cls, "GET_NODE_INFO_V1"):
            out[name] = cls.GET_NODE_INFO_V1()
            continue
        types = cls.INPUT_TYPES()
        out[name] = {"input": types, "input_order": {k: list(v) for k, v in types.items()},
                     "output": list(cls.RETURN_TYPES),
                     "output_name": list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES),
                     "name": name, "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
    return out
