"""Two gloo processes (DistributedDataParallel) follow the same trajectory as one process with the
same global batch and seed: same losses per step and the same final weights, within float tolerance."""
import json
from pathlib import Path
import os
import socket
import subprocess
import sys

import pytest
import torch

from cugd_core.losses import LossConfig
from cugd_core.train import CHECKPOINT, LOG, TrainConfig, build_model, load_checkpoint, train
from tests._paths import REPO
from tests._train_pairs import TINY_MODEL, make_pairs

STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(data, out) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), steps=STEPS, batch_size=4, crop=32, model=TINY_MODEL,
                       val_every=0, ckpt_every=100, log_every=1, progress=False,
                       loss={**LossConfig().__dict__, "unrolled_every": 2})


WORKER = """
import json, sys
import torch.distributed as dist
from cugd_core.train import TrainConfig, train
summary = train(TrainConfig(**json.loads(open(sys.argv[1]).read())), device="cpu", threads=1, resume=True)
assert summary["world_size"] == 2 and summary["step"] == {steps}
dist.destroy_process_group()
"""


def _torchrun(tmp_path, cfg: TrainConfig, nproc: int) -> None:
    """`torchrun --nproc_per_node N script cfg.json` on 127.0.0.1 and a free port, as a user would
    (the script resumes the run in cfg.out if there is one)."""
    script, cfg_json = tmp_path / "worker.py", tmp_path / f"cfg_{Path(cfg.out).name}.json"
    script.write_text(WORKER.format(steps=STEPS))
    cfg_json.write_text(json.dumps(cfg.to_dict()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), str(cfg_json)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / LOG).read_text().splitlines()]


WEIGHT_ATOL = 5e-5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    data = make_pairs(tmp_path / "pairs", 8, (40, 56))
    _torchrun(tmp_path, _cfg(data, tmp_path / "ddp"), 2)
    single = train(_cfg(data, tmp_path / "one"), device="cpu")
    assert single["world_size"] == 1

    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "ddp")
    assert len(one) == len(two) == STEPS
    assert one == pytest.approx(two, rel=1e-5)

    a, b = load_checkpoint(tmp_path / "one" / CHECKPOINT), load_checkpoint(tmp_path / "ddp" / CHECKPOINT)
    assert b["world_size"] == 2 and len(b["rng"]) == 2 and b["step"] == STEPS
    init = build_model(_cfg(data, tmp_path / "x")).state_dict()
    # Adam divides each gradient by its own running RMS, so the float noise of a different reduction
    # order (all-reduce of two half batches vs one batch) in a parameter whose gradient is tiny shows
    # up at ~1e-5 of its weight (measured: 2.0e-5 on atten_q1q1.q after 3 steps); WEIGHT_ATOL keeps
    # that, and stays far below how far training moved the weights (asserted next).
    for k, w in a["model"].items():
        torch.testing.assert_close(b["model"][k], w, rtol=0, atol=WEIGHT_ATOL, msg=k)
        torch.testing.assert_close(b["ema"][k], a["ema"][k], rtol=0, atol=WEIGHT_ATOL, msg=k)
    assert max(float((a["model"][k] - init[k]).abs().max()) for k in init) > 5 * WEIGHT_ATOL
    assert (tmp_path / "ddp" / "config.json").is_file()

    # resume with another world size: 2 steps in one process, the last one on 2 ranks
    part = train(_cfg(data, tmp_path / "mixed"), device="cpu", stop_after=2)
    assert part["step"] == 2
    _torchrun(tmp_path, _cfg(data, tmp_path / "mixed"), 2)
    c = load_checkpoint(tmp_path / "mixed" / CHECKPOINT)
    assert c["step"] == STEPS and c["world_size"] == 2
    assert _losses(tmp_path / "mixed") == pytest.approx(one, rel=1e-5)
    for k, w in a["model"].items():
        torch.testing.assert_close(c["model"][k], w, rtol=0, atol=WEIGHT_ATOL, msg=k)
