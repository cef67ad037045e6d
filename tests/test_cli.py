"""`python -m cugd_core`: sub-command registry, `enhance` on files and folders, folder pipeline, resume."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cugd_core import commands
from cugd_core.imageops import load_image
from cugd_core.pipeline import FolderRunner, collect_jobs
from tests._enhance_helpers import tiny_denoiser, write_dark, write_priors, write_tiny_model
from tests._paths import REPO

FAST = ["--steps", "2", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.safetensors")


def make_folder(root: Path, sizes, seed=0) -> tuple[Path, Path]:
    """root/in/<i>.png dark images and root/priors/<i>_{edge,semantic}.png."""
    for i, (h, w) in enumerate(sizes):
        write_dark(root / "in" / f"img{i}.png", h, w, seed + i)
        write_priors(root / "priors", f"img{i}", h, w, seed + i)
    return root / "in", root / "priors"


def run_cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "cugd_core", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_enhance_folder_end_to_end_with_summary_and_resume(tmp_path, tiny_model, capsys):
    src, priors = make_folder(tmp_path, [(40, 60), (33, 47), (40, 60)])
    out = tmp_path / "out"
    r = run_cli("enhance", src, "-o", out, "--model", tiny_model, "--priors", priors, "--side-by-side", *FAST)
    assert r.returncode == 0, r.stderr
    assert "3 enhanced, 0 skipped (already done), 0 failed" in r.stderr and "images/min" in r.stderr
    assert "Traceback" not in r.stderr
    for i, (h, w) in enumerate([(40, 60), (33, 47), (40, 60)]):
        assert load_image(out / f"img{i}.png").shape == (h, w, 3)
        sbs = load_image(out / f"img{i}_before_after.png")
        assert sbs.shape == (h, 2 * w + 8, 3)
        np.testing.assert_array_equal(sbs[:, :w], load_image(src / f"img{i}.png"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    # a second run skips everything; --overwrite redoes it with the same (seeded) result
    first = load_image(out / "img1.png")
    args = ["-o", str(out), "--model", str(tiny_model), "--priors", str(priors), *FAST]
    assert commands.main(["enhance", str(src), *args, "--side-by-side"]) == 0
    assert "0 enhanced, 3 skipped" in capsys.readouterr().err
    (out / "img1.png").unlink()
    assert commands.main(["enhance", str(src / "img1.png"), *args]) == 0
    assert "1 enhanced, 0 skipped" in capsys.readouterr().err
    np.testing.assert_array_equal(load_image(out / "img1.png"), first)


def test_precision_flag_runs_the_enhance_path_in_bf16(tmp_path, tiny_model, capsys):
    from cugd_core.devices import for_inference
    from cugd_core.enhance import enhance
    from cugd_core.weights import load_denoiser

    src, priors = make_folder(tmp_path, [(40, 60)])
    args = [str(src), "--model", str(tiny_model), "--priors", str(priors), *FAST]
    assert commands.main(["enhance", *args, "-o", str(tmp_path / "bf16"), "--precision", "bf16"]) == 0
    assert commands.main(["enhance", *args, "-o", str(tmp_path / "fp32")]) == 0
    got = load_image(tmp_path / "bf16" / "img0.png")
    pr = tuple(load_image(priors / f"img0_{k}.png") for k in ("edge", "semantic"))
    want = enhance(load_image(src / "img0.png").copy(), for_inference(load_denoiser(str(tiny_model))), priors=pr,
                   steps=2, precision="bf16")  # the CLI's model is channels-last on the CPU (for_inference)
    np.testing.assert_array_equal(got, want)  # the CLI passes --precision through to enhance
    assert not np.array_equal(got, load_image(tmp_path / "fp32" / "img0.png"))
    with pytest.raises(ValueError, match="precision"):
        FolderRunner(tiny_denoiser(), precision="fp8")


def test_pipelined_and_one_at_a_time_give_the_same_files(tmp_path, tiny_model):
    src, priors = make_folder(tmp_path, [(30, 40), (36, 20), (30, 40), (8, 64)])
    a, b = tmp_path / "a", tmp_path / "b"
    assert commands.main(["enhance", str(src), "-o", str(a), "--model", str(tiny_model), "--priors", str(priors), *FAST]) == 0
    assert commands.main(["enhance", str(src), "-o", str(b), "--model", str(tiny_model), "--priors", str(priors),
                     "--no-pipeline", *FAST]) == 0
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) == [f"img{i}.png" for i in range(4)]
    for n in names:
        np.testing.assert_array_equal(load_image(a / n), load_image(b / n))


def test_bad_files_are_reported_and_skipped(tmp_path, tiny_model, capsys):
    src, priors = make_folder(tmp_path, [(30, 40), (30, 40)])
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    write_dark(src / "nopriors.png", 30, 40)  # its prior files are missing
    code = commands.main(["enhance", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model),
                     "--priors", str(priors), *FAST])
    err = capsys.readouterr().err
    assert code == commands.EXIT_SOME_FAILED == 3  # scripts can tell a partial failure from success
    assert "2 enhanced, 0 skipped (already done), 2 failed" in err
    assert "broken.png" in err and "nopriors_edge.png" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png", "img1.png"]


def test_interrupted_run_writes_nothing_partial_and_resumes(tmp_path):
    src, priors = make_folder(tmp_path, [(30, 40)] * 3)
    jobs = collect_jobs([src], tmp_path / "out", priors_dir=priors, side_by_side=True)
    model = tiny_denoiser(0)

    class Cancel(Exception):
        pass

    calls = []

    def interrupt():  # ComfyUI-style: raises after a few steps, here in the middle of the 2nd image
        calls.append(1)
        if len(calls) == 6:
            raise Cancel

    for pipelined in (True, False):
        for p in (tmp_path / "out").glob("*"):
            p.unlink()
        calls.clear()
        with pytest.raises(Cancel) as info:
            FolderRunner(model, steps=3, progress=False, interrupt=interrupt, pipelined=pipelined).run(jobs)
        assert info.value.cugd_report.done == 1 and info.value.cugd_report.interrupted
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png", "img0_before_after.png"]
        report = FolderRunner(model, steps=3, progress=False, pipelined=pipelined).run(jobs)
        assert (report.done, report.skipped, report.failed) == (2, 1, [])


def test_collect_jobs_names(tmp_path):
    for name in ("a.png", "a.jpg", "b.PNG", ".hidden.png", "notes.txt", "sub/c.png"):
        p = tmp_path / "in" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    jobs = collect_jobs([tmp_path / "in"], tmp_path / "out")
    assert sorted(j.out.name for j in jobs) == ["a_jpg.png", "a_png.png", "b.png"]
    jobs = collect_jobs([tmp_path / "in"], tmp_path / "out", recursive=True, side_by_side=True)
    assert (tmp_path / "out" / "sub" / "c.png") in [j.out for j in jobs]
    assert all(j.side_by_side.name.endswith("_before_after.png") for j in jobs)
    with pytest.raises(FileNotFoundError, match="input not found"):
        collect_jobs([tmp_path / "missing"], tmp_path / "out")


def test_missing_default_model_and_sample_say_what_to_do(tmp_path, capsys, monkeypatch):
    write_dark(tmp_path / "x.png", 20, 20)
    monkeypatch.setenv("CUGD_MODELS", str(tmp_path / "models"))
    assert commands.main(["enhance", str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "default model" in err and "--model" in err
    assert not (tmp_path / "out").exists()
    assert commands.main(["demo", "--image", str(tmp_path / "nothere.png")]) == 2
    assert "sample image" in capsys.readouterr().err


def test_a_broken_subcommand_module_does_not_break_the_others(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.setitem(commands.COMMANDS, "synth", ("cugd_core._no_such_module", "synthetic pairs"))
    assert commands.main(["synth", "--help"]) == 2
    err = capsys.readouterr().err
    assert "cannot be imported" in err and "pip install -r requirements.txt" in err
    src, priors = make_folder(tmp_path, [(20, 20)])
    assert commands.main(["enhance", str(src), "-o", str(tmp_path / "o"), "--model", str(tiny_model),
                     "--priors", str(priors), *FAST]) == 0
    with pytest.raises(SystemExit) as e:  # every registered command is listed
        commands.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("enhance", "demo", "priors", "synth", "train", "evaluate", "convert"))


def test_demo_writes_the_two_readme_files(tmp_path, tiny_model, monkeypatch):
    img = write_dark(tmp_path / "sample_dark.png", 36, 52)
    write_priors(tmp_path / "priors", "sample_dark", 36, 52)
    code = commands.main(["demo", "--image", str(img), "-o", str(tmp_path / "out"), "--model", str(tiny_model),
                     "--priors", str(tmp_path / "priors"), *FAST])
    assert code == 0
    assert load_image(tmp_path / "out" / "sample_enhanced.png").shape == (36, 52, 3)
    assert Image.open(tmp_path / "out" / "sample_before_after.png").size == (2 * 52 + 8, 36)


# -- one command line: the same option means the same thing in every command --------------------------
def parse(*argv: str):
    """`argv` parsed by the CLI's parser, as `main` would (only that command's module is imported)."""
    return commands.build_parser(argv[0]).parse_args(list(argv))


def test_tile_zero_means_automatic_as_on_the_nodes(capsys):
    """`--tile 0` = automatic (the node's tile_size=0); whole/none = no tiling; too small = usage error."""
    common = ("enhance", "x.png", "-o", "out")
    assert parse(*common).tile == "auto" == parse(*common, "--tile", "0").tile == parse(*common, "--tile", "auto").tile
    assert parse(*common, "--tile", "whole").tile is None and parse(*common, "--tile", "none").tile is None
    assert parse(*common, "--tile", "256").tile == 256
    for bad in ("32", "big"):
        with pytest.raises(SystemExit) as e:
            parse(*common, "--tile", bad)
        assert e.value.code == commands.EXIT_USAGE
        assert "--tile" in capsys.readouterr().err


def test_shared_options_have_one_spelling_and_old_ones_still_work(capsys):
    """priors' old --mode/--no-progress are hidden aliases of --prior-mode/--quiet (with a note on stderr)."""
    new = parse("priors", "--data", "d", "--prior-mode", "exact", "--quiet")
    old = parse("priors", "--data", "d", "--mode", "exact", "--no-progress")
    assert (new.prior_mode, new.quiet) == (old.prior_mode, old.quiet) == ("exact", True)
    err = capsys.readouterr().err
    assert "--mode is deprecated, use --prior-mode" in err and "--no-progress is deprecated, use --quiet" in err
    assert parse("priors", "--data", "d").prior_mode == "fast" and not parse("priors", "--data", "d").quiet
    with pytest.raises(SystemExit):
        parse("priors", "--data", "d", "--mode", "slow")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        commands.build_parser("priors").parse_args(["priors", "--help"])
    assert "--mode" not in (text := capsys.readouterr().out) and "--no-progress" not in text
    # --device, --quiet, --prior-mode, --seed: the same spelling in every command that takes them
    shared = {"--device", "--quiet", "--prior-mode", "--seed"}
    for name in commands.COMMANDS:
        parser = commands.build_parser(name)
        sub = next(a for a in parser._actions if a.dest == "command").choices[name]
        strings = {s for a in sub._actions if a.help != "==SUPPRESS==" for s in a.option_strings}
        assert not strings & {"--mode", "--no-progress", "--progress"}, name
        expected = shared - {"--seed"} if name == "priors" else shared
        if name in ("enhance", "demo", "evaluate", "train", "priors"):
            assert expected <= strings, name
