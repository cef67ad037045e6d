"""Where ComfyUI is, and the small model files the node tests put into a models folder."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMFYUI_HOME = Path(os.environ.get("COMFYUI_HOME", Path.home() / ".cache" / "cugd-comfyui"))
COMFYUI_DIR = Path(os.environ.get("COMFYUI_DIR", COMFYUI_HOME / "ComfyUI"))
PACK_NAME = "cugd"  # folder name of the pack inside the test server's custom_nodes/

# the `small` golden topology: 3 levels, 0.86 M parameters; a 64x64 step takes milliseconds
TINY_CONFIG = dict(inner_channel=32, norm_groups=16, channel_multiplier=[1, 1, 2], res_blocks=1,
                   image_size=128, attn_res=[32])
TINY_MODEL_NAME = "cugd_tiny_test.safetensors"
UPSCALER = "RealESRGAN_x2plus.pth"  # the name the upscale workflow picks (a tiny random one in tests)


def comfy_python() -> str:
    env = os.environ.get("COMFYUI_PYTHON")
    if env:
        return env
    venv = COMFYUI_HOME / "venv" / "bin" / "python"
    return str(venv) if venv.is_file() else sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_denoiser(seed: int = 0):
    import torch

    from cugd_core.config import CUGDConfig
    from cugd_core.unet import CUGDDenoiser

    torch.manual_seed(seed)
    return CUGDDenoiser(CUGDConfig.from_authors(TINY_CONFIG)).eval()


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny CUGD denoiser saved as our .safetensors (config in the metadata)."""
    from cugd_core.weights import save_safetensors

    return save_safetensors(tiny_denoiser(seed), path, metadata={"name": "tiny random test model"})


def write_tiny_upscaler(path: Path, feat: int = 8, seed: int = 0) -> Path:
    """A tiny random x2 upscaler in Real-ESRGAN's compact layout (conv, PReLU, 2x(conv, PReLU), conv
    to 3*2*2 channels + pixel shuffle), which ComfyUI's UpscaleModelLoader (spandrel) recognises.
    Saved with torch.save (plain tensors) when the name ends in .pth, else as .safetensors."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shapes = {"body.0.weight": (feat, 3, 3, 3), "body.0.bias": (feat,), "body.1.weight": (feat,),
              "body.2.weight": (feat, feat, 3, 3), "body.2.bias": (feat,), "body.3.weight": (feat,),
              "body.4.weight": (feat, feat, 3, 3), "body.4.bias": (feat,), "body.5.weight": (feat,),
              "body.6.weight": (12, feat, 3, 3), "body.6.bias": (12,)}
    sd = {k: (torch.randn(s, generator=g) * 0.05).contiguous() for k, s in shapes.items()}
    if str(path).endswith(".pth"):
        torch.save(sd, str(path))
    else:
        from safetensors.torch import save_file

        save_file(sd, str(path))
    return path


# -- a real ComfyUI server ----------------------------------------------------------------------------
@dataclass
class Server:
    url: str
    base: Path
    log: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def client(self):
        from tests.comfy_client import ComfyClient

        return ComfyClient(self.url)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; only this server's own process."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def prepare_base(base: Path) -> Path:
    """A fresh ComfyUI base directory with this pack symlinked into custom_nodes/."""
    for sub in ("custom_nodes", "input", "output", "temp", "user", "models/cugd", "models/sams",
                "models/upscale_models"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return base


def start_server(base: Path, deadline_s: float = 120.0, env: dict | None = None) -> Server:
    """Start ComfyUI (CPU, 127.0.0.1, a free port) on `base`, wait until it answers, log to base/server.log."""
    from urllib.request import urlopen

    port = free_port()
    log = base / "server.log"
    cmd = [comfy_python(), str(COMFYUI_DIR / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base), "--database-url", f"sqlite:///{base}/user/comfyui.db",
           "--disable-auto-launch", "--disable-api-nodes"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(base),
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **(env or {})})
    server = Server(f"http://127.0.0.1:{port}", base, log, proc)
    end = time.monotonic() + deadline_s
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {proc.returncode} while starting:\n{server.log_text()[-4000:]}")
            try:
                with urlopen(server.url + "/system_stats", timeout=2) as r:
                    if r.status == 200:
                        return server
            except OSError:
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"ComfyUI did not answer within {deadline_s} s:\n{server.log_text()[-4000:]}")
            time.sleep(0.5)
    except BaseException:
        server.stop()
        raise
