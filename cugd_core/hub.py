"""Hugging Face Hub references to CUGD weights.

A reference names one file in a model repository at a revision, as a `HubRef` or as the string
`hf://owner/name/path/in/repo.safetensors@revision` (`@revision` optional, default `main`).
Files are fetched with `huggingface_hub.hf_hub_download` into its cache, so the usual variables
apply: `HF_ENDPOINT` (another Hub-compatible server), `HF_HOME` / `HF_HUB_CACHE` (cache location),
`HF_HUB_OFFLINE=1` (never touch the network; serve from the cache).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PREFIX = "hf://"
PROBE_TIMEOUT_S = 5.0  # connect, and wait for the first answer of the Hub, at most this long


class HubError(OSError):
    """A Hub reference could not be resolved to a local file (message says what to do)."""


@dataclass(frozen=True)
class HubRef:
    """One file in a Hub model repository: `repo_id` = "owner/name", `filename` = path inside it."""

    repo_id: str
    filename: str
    revision: str = "main"

    def __post_init__(self) -> None:
        parts = self.repo_id.split("/")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"Hub repo_id must look like 'owner/name', got {self.repo_id!r}")
        if not self.filename or self.filename.startswith("/") or ".." in self.filename.split("/"):
            raise ValueError(f"Hub filename must be a relative path inside the repo, got {self.filename!r}")
        if not self.revision:
            raise ValueError("Hub revision must not be empty (use 'main' or a commit hash)")

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo_id}/{self.filename}@{self.revision}"


def is_hub_ref(source: object) -> bool:
    return isinstance(source, HubRef) or (isinstance(source, str) and source.startswith(PREFIX))


def parse_hub_ref(text: str) -> HubRef:
    """`hf://owner/name/path/file.safetensors[@revision]` -> `HubRef`.

    The revision follows the last `@`, so revisions such as `refs/pr/1` work; filenames must not
    contain `@`.
    """
    if not text.startswith(PREFIX):
        raise ValueError(f"not a Hub reference (expected '{PREFIX}owner/name/file@revision'): {text!r}")
    body, sep, revision = text[len(PREFIX):].rpartition("@")
    if not sep:
        body, revision = revision, "main"
    parts = body.split("/")
    if len(parts) < 3:
        raise ValueError(f"Hub reference needs owner/name/filename, got {text!r} "
                         f"(example: {PREFIX}someone/cugd-lolv2/cugd_lolv2real.safetensors@main)")
    return HubRef("/".join(parts[:2]), "/".join(parts[2:]), revision)


def _offline() -> bool:
    from huggingface_hub import constants
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return env or constants.is_offline_mode()


def hub_download(ref: HubRef | str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """Local path of the referenced file: downloaded into the Hub cache, or taken from it.

    Online, a branch/tag is re-checked on the server (falling back to the cache if the server is
    unreachable); offline (`HF_HUB_OFFLINE=1`) only the cache is read. Raises `HubError` when the
    file is neither reachable nor cached, or the repo, revision or file does not exist.
    """
    ref = parse_hub_ref(ref) if isinstance(ref, str) else ref
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError as e:  # pragma: no cover - huggingface_hub is a runtime dependency
        raise HubError(f"loading {ref} needs the huggingface_hub package: pip install huggingface_hub") from e
    offline = _offline()
    # huggingface_hub retries a refused connection for ~20 s, and a server that accepts but never
    # answers for ~400 s (6 tries of 60 s); one bounded request first decides at once, and lets a
    # cached file be used without the wait
    unreachable = not offline and not _answers(_resolve_url(ref))
    try:
        path = hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision,
                               cache_dir=None if cache_dir is None else str(cache_dir),
                               local_files_only=offline or unreachable)
    except LocalEntryNotFoundError as e:
        if offline:
            raise HubError(f"{ref} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: download it "
                           "once with HF_HUB_OFFLINE unset (or copy the file into ComfyUI/models/cugd and use "
                           "its name)") from e
        raise HubError(f"cannot reach the Hugging Face Hub at {_endpoint()} to fetch {ref} (no answer within "
                       f"{PROBE_TIMEOUT_S:g} s), and it is not in the local cache: check the network/HF_ENDPOINT, "
                       "or use a local file") from e
    except RepositoryNotFoundError as e:
        raise HubError(f"{ref}: repository {ref.repo_id!r} not found on {_endpoint()} "
                       "(or it is private/gated: log in with `hf auth login`)") from e
    except RevisionNotFoundError as e:
        raise HubError(f"{ref}: revision {ref.revision!r} not found in {ref.repo_id}") from e
    except EntryNotFoundError as e:
        raise HubError(f"{ref}: file {ref.filename!r} not found in {ref.repo_id}@{ref.revision}") from e
    except HfHubHTTPError as e:
        raise HubError(f"{ref}: the Hub at {_endpoint()} answered {e}") from e
    return Path(path)


def _resolve_url(ref: HubRef) -> str:
    """The URL huggingface_hub asks first for this file (HEAD)."""
    from urllib.parse import quote

    return f"{_endpoint().rstrip('/')}/{ref.repo_id}/resolve/{quote(ref.revision, safe='')}/{quote(ref.filename)}"


def _answers(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the server answers a HEAD of `url` (any HTTP status) within `timeout` seconds, both to
    connect and for the answer. Refused, unresolvable and silent servers do not. Behind a proxy
    (`*_PROXY` set) the host may be unreachable directly yet served, so the check is left to
    huggingface_hub; TLS problems are left to it too (its message says more)."""
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # direct, as decided above
    try:
        with opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:  # 401/404/...: it answered
        return True
    except urllib.error.URLError as e:
        return isinstance(e.reason, ssl.SSLError)
    except (TimeoutError, ConnectionError, http.client.HTTPException):  # silent, or hung up without answering
        return False
    except ValueError:  # not a URL at all: huggingface_hub will say so
        return True


def _endpoint() -> str:
    from huggingface_hub import constants
    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT)
