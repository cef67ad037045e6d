"""Hub references against a tiny Hub-compatible server on 127.0.0.1 (never the internet).

The server implements what `huggingface_hub.hf_hub_download` needs: HEAD and GET on
`/{repo_id}/resolve/{revision}/{filename}` answering `X-Repo-Commit`, `ETag`/`X-Linked-Etag`,
`X-Linked-Size` and `Content-Length`, and 404s with the Hub's `X-Error-Code`. Each load runs in a
fresh Python process with `HF_ENDPOINT`, `HF_HOME` and `HF_HUB_OFFLINE` set, as a user would.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest
import torch

from cugd_core.hub import HubRef, parse_hub_ref
from cugd_core.weights import save_safetensors
from tests._paths import REPO
from tests.golden import golden_net

REPO_ID = "cugd-test/cugd-small"
FILENAME = "weights/cugd_small.safetensors"
COMMIT = hashlib.sha1(b"cugd-small-v1").hexdigest()


class HubServer:
    """Serves `files[(repo_id, filename)] = bytes` at revisions `main` and `COMMIT`; logs requests."""

    def __init__(self, files: dict[tuple[str, str], bytes]):
        self.files, self.requests = files, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_HEAD(self):
                self._answer(send_body=False)

            def do_GET(self):
                self._answer(send_body=True)

            def _answer(self, send_body: bool):
                server.requests.append((self.command, self.path))
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", urlsplit(self.path).path)
                if not m:
                    return self._error(404, "RepoNotFound")
                repo, revision, filename = (unquote(g) for g in m.groups())
                if repo not in {r for r, _ in server.files}:
                    return self._error(404, "RepoNotFound")
                if revision not in ("main", COMMIT):
                    return self._error(404, "RevisionNotFound")
                data = server.files.get((repo, filename))
                if data is None:
                    return self._error(404, "EntryNotFound", commit=True)
                digest = hashlib.sha256(data).hexdigest()  # LFS files: the ETag is the content's sha256
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{digest}"')
                self.send_header("X-Linked-Etag", f'"{digest}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if send_body:
                    self.wfile.write(data)

            def _error(self, status: int, code: str, commit: bool = False):
                body = json.dumps({"error": code}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                if commit:
                    self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if not self.thread.is_alive():
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (a hung Hub or a black-holing proxy).
    The accepting thread is a daemon and ends with `stop()`; held connections are closed then."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held, self._stop = [], threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except (TimeoutError, OSError):
                pass

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=5)
        for s in self.held + [self.sock]:
            s.close()


# Runs in a fresh interpreter: load each reference through the public API, report the output on
# the golden inputs (or the error) as one JSON list.
_LOAD = r"""
import json, sys, time, numpy as np, torch
from cugd_core.weights import load_denoiser
z = np.load(sys.argv[1])
t = lambda k: torch.from_numpy(z["nopad/" + k])
results = []
for ref in sys.argv[2:]:
    t0 = time.monotonic()
    try:
        model = load_denoiser(ref)
    except Exception as e:
        results.append({"error": type(e).__name__, "message": str(e), "seconds": time.monotonic() - t0})
        continue
    with torch.no_grad():
        eps = model(t("x"), t("gamma"), t("edge"), t("semantic"))
    results.append({"max_diff": float((eps - t("eps")).abs().max()), "config": model.config.to_json(),
                    "dtype": str(next(model.parameters()).dtype), "training": model.training})
print(json.dumps(results))
"""


def _load_in_fresh_process(refs: list[str], hf_home, *, endpoint: str, offline: bool) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1,localhost", PYTHONPATH=str(REPO))
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    from tests._paths import GOLDEN
    proc = subprocess.run([sys.executable, "-c", _LOAD, str(GOLDEN / "golden_net_small.npz"), *refs],
                          env=env, cwd=str(REPO), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def served(tmp_path):
    path = tmp_path / "upload" / "cugd_small.safetensors"
    save_safetensors(golden_net(), path, dtype=torch.float16, metadata={"name": "golden small"})
    server = HubServer({(REPO_ID, FILENAME): path.read_bytes()})
    yield server
    server.stop()


@pytest.mark.slow
def test_hub_download_then_offline_cache_then_clear_errors(served, tmp_path):
    hf_home, ref = tmp_path / "hf_home", f"hf://{REPO_ID}/{FILENAME}@main"
    endpoint = served.url

    [online] = _load_in_fresh_process([ref], hf_home, endpoint=endpoint, offline=False)
    assert "error" not in online, online
    assert online["max_diff"] <= 1e-5 and online["dtype"] == "torch.float32" and not online["training"]
    assert ("GET", f"/{REPO_ID}/resolve/main/{FILENAME}") in served.requests
    blobs = list((hf_home / "hub").glob("models--cugd-test--cugd-small/blobs/*"))
    assert len(blobs) == 1, "the file must land in the Hugging Face cache under HF_HOME"

    served.stop()  # from here on nothing answers on that port
    n_requests = len(served.requests)

    offline, pinned = _load_in_fresh_process([ref, f"hf://{REPO_ID}/{FILENAME}@{COMMIT}"], hf_home,
                                             endpoint=endpoint, offline=True)
    assert offline == online, "HF_HUB_OFFLINE=1 must load the same model from the cache"
    assert pinned == online, "a commit-hash revision resolves from the cache too"
    [unreachable] = _load_in_fresh_process([ref], hf_home, endpoint=endpoint, offline=False)
    assert unreachable == online, "with the server down, a cached file is still used"
    assert len(served.requests) == n_requests

    empty_home = tmp_path / "empty_home"
    [miss] = _load_in_fresh_process([ref], empty_home, endpoint=endpoint, offline=True)
    assert miss["error"] == "HubError"
    assert "not in the Hugging Face cache" in miss["message"] and "HF_HUB_OFFLINE" in miss["message"]

    # huggingface_hub alone retries a refused connection with back-off sleeps (~20 s) before giving
    # up; our probe answers at once (a bound on sleeping, not on CPU speed)
    [down] = _load_in_fresh_process([ref], empty_home, endpoint=endpoint, offline=False)
    assert down["error"] == "HubError"
    assert "cannot reach the Hugging Face Hub" in down["message"] and endpoint in down["message"]
    assert down["seconds"] < 8, down


@pytest.mark.slow
def test_a_hub_that_accepts_but_never_answers_fails_fast_or_uses_the_cache(served, tmp_path):
    """huggingface_hub alone waits ~400 s (6 tries of 60 s) for such a server before its error."""
    ref = f"hf://{REPO_ID}/{FILENAME}@main"
    [online] = _load_in_fresh_process([ref], tmp_path / "hf_home", endpoint=served.url, offline=False)
    assert "error" not in online, online
    silent = SilentServer()
    try:
        [miss] = _load_in_fresh_process([ref], tmp_path / "empty_home", endpoint=silent.url, offline=False)
        [cached] = _load_in_fresh_process([ref], tmp_path / "hf_home", endpoint=silent.url, offline=False)
        assert silent.held, "the loader never connected to the silent server"
    finally:
        silent.stop()
    assert miss["error"] == "HubError" and "cannot reach the Hugging Face Hub" in miss["message"], miss
    assert silent.url in miss["message"] and "no answer within" in miss["message"]
    assert miss["seconds"] < 20, miss  # a bound on waiting (the probe's 5 s timeout), not on CPU speed
    assert cached == online, "with the Hub silent, the cached file is used"


@pytest.mark.slow
def test_hub_missing_repo_revision_file_are_named(served, tmp_path):
    hf_home = tmp_path / "hf_home"
    cases = {f"hf://someone/absent/{FILENAME}": "repository 'someone/absent' not found",
             f"hf://{REPO_ID}/{FILENAME}@v9": "revision 'v9' not found",
             f"hf://{REPO_ID}/weights/other.safetensors": "file 'weights/other.safetensors' not found"}
    results = _load_in_fresh_process(list(cases), hf_home, endpoint=served.url, offline=False)
    for (ref, expected), result in zip(cases.items(), results):
        assert result.get("error") == "HubError" and expected in result["message"], (ref, result)


def test_hub_ref_parsing():
    assert parse_hub_ref("hf://a/b/c.safetensors") == HubRef("a/b", "c.safetensors", "main")
    assert parse_hub_ref("hf://a/b/dir/c.safetensors@v1") == HubRef("a/b", "dir/c.safetensors", "v1")
    assert parse_hub_ref("hf://a/b/c.safetensors@refs/pr/3").revision == "refs/pr/3"
    assert str(HubRef("a/b", "c.safetensors", COMMIT)) == f"hf://a/b/c.safetensors@{COMMIT}"
    assert parse_hub_ref(str(HubRef("a/b", "x/y.pth", "dev"))) == HubRef("a/b", "x/y.pth", "dev")
    for bad in ("hf://a/b", "hf://only-name/c.safetensors@", "a/b/c.safetensors", "hf://a/b/../c.pth"):
        with pytest.raises(ValueError):
            parse_hub_ref(bad)
    with pytest.raises(ValueError, match="owner/name"):
        HubRef("gpt2", "model.safetensors")
