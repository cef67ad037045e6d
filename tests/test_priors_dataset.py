"""Dataset priors cache: files, resumability, reading back, the `priors` CLI sub-command."""

import numpy as np
import pytest
import torch
from PIL import Image

from cugd_core.commands import main
from cugd_core.priors import compute_dataset_priors, load_cached_priors
from cugd_core.priors.dataset import prior_paths
from tests._priors_helpers import tiny_sam


def _lol(root, names=("1.png", "22.png"), size=(20, 28)):
    rng = np.random.default_rng(1)
    for split in ("low", "high"):
        (root / split).mkdir(parents=True)
        for n in names:
            img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            img[: size[0] // 2] //= 4
            Image.fromarray(img).save(root / split / n)
    return root


def test_cache_written_resumed_and_read_back(tmp_path):
    data = _lol(tmp_path / "lol")
    sam = tiny_sam()
    stats = compute_dataset_priors(data, sam=sam, mode="fast", progress=False)
    assert stats["images"] == 4 and stats["written"] == 4 and stats["skipped"] == 0
    root = data / "priors" / "fast"
    for split in ("low", "high"):
        for stem in ("1", "22"):
            for p in prior_paths(root, split, stem):
                with Image.open(p) as im:
                    assert im.mode == "RGB" and im.size == (28, 20)
    assert not list(root.rglob("*.tmp*"))  # atomic writes leave no temp files
    edge_file = prior_paths(root, "low", "1")[0]
    before = edge_file.stat().st_mtime_ns
    again = compute_dataset_priors(data, sam=sam, mode="fast", progress=False)
    assert again["written"] == 0 and again["skipped"] == 4 and edge_file.stat().st_mtime_ns == before
    edge_file.unlink()  # an interrupted run: only the missing image is redone
    assert compute_dataset_priors(data, sam=sam, mode="fast", progress=False)["written"] == 1
    e, s = load_cached_priors(data, "low", "1", mode="fast")
    assert e.shape == s.shape == (3, 20, 28) and e.dtype == torch.float32
    from cugd_core.priors import extract_priors
    ref_e, ref_s = extract_priors(np.asarray(Image.open(data / "low" / "1.png")), sam, mode="fast")
    assert torch.equal(e, ref_e) and torch.equal(s, ref_s)


def test_out_dir_and_errors(tmp_path):
    data = _lol(tmp_path / "lol", names=("a.png",))
    out = tmp_path / "cache"
    compute_dataset_priors(data, out, sam=tiny_sam(), mode="fast", progress=False)
    assert all(p.is_file() for p in prior_paths(out, "high", "a"))
    assert not (data / "priors").exists()
    with pytest.raises(FileNotFoundError, match="low/"):
        compute_dataset_priors(tmp_path / "empty", sam=tiny_sam(), progress=False)
    with pytest.raises(FileNotFoundError, match="cugd_core priors"):
        load_cached_priors(data, "low", "missing")
    with pytest.raises(ValueError, match="mode"):
        compute_dataset_priors(data, sam=tiny_sam(), mode="turbo", progress=False)


def test_cli_subcommand(tmp_path, capsys, monkeypatch):
    import cugd_core.priors.dataset as ds

    asked = []

    def fake_as_sam(obj, sam_dirs=None):  # the tiny model instead of a checkpoint; records the request
        asked.append((obj, sam_dirs))
        return tiny_sam()

    monkeypatch.setattr(ds, "as_sam", fake_as_sam)
    data = _lol(tmp_path / "lol", names=("x.png",), size=(24, 32))
    argv = ["priors", "--data", str(data), "--out", str(tmp_path / "o"), "--quiet",
            "--sam", "sam_vit_b_01ec64.pth", "--sam-dir", str(tmp_path)]
    assert main(argv) == 0
    assert "2 written" in capsys.readouterr().out
    assert asked == [("sam_vit_b_01ec64.pth", [str(tmp_path)])]
    assert all(p.is_file() for s in ("low", "high") for p in prior_paths(tmp_path / "o", s, "x"))
    assert main(argv) == 0 and "2 already cached" in capsys.readouterr().out
    assert len(asked) == 1  # nothing to do: the model is not even loaded
