"""The command line: bad input gives one line on stderr and a non-zero exit, never a traceback."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "codegen", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          timeout=600)


def assert_one_line_error(p, *needles):
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def good_ckpt(checkpoint_factory):
    return checkpoint_factory(0.35)


@pytest.mark.parametrize("junk", [b"this is not a checkpoint at all" * 10, b"garbage\n" * 10],
                         ids=["empty-stack", "weights-only-refusal"])
def test_corrupt_checkpoint(tmp_path, junk):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(junk)  # the second fails inside torch's weights-only unpickler, whose message advises unsafe loading
    p = run("quantize", "--weights", str(bad), "-o", str(tmp_path / "m.tflite"))
    assert_one_line_error(p, str(bad), "corrupt")
    assert "weights_only" not in p.stderr  # torch's advice to load it unsafely is not passed on
    assert not (tmp_path / "m.tflite").exists()


class _MakesDirectory:
    """Unpickling this calls os.mkdir(path): what a hostile checkpoint would do, harmlessly."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_checkpoint_with_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pt"
    torch.save({"state_dict": {}, "payload": _MakesDirectory(str(marker))}, hostile)
    p = run("verify", "--weights", str(hostile), "--samples", "1")
    assert_one_line_error(p, str(hostile), "refused", "weights_only=True")
    assert "weights_only=False" not in p.stderr  # no advice to load an untrusted file unsafely
    assert not marker.exists()


def test_truncated_checkpoint(tmp_path, good_ckpt):
    data = good_ckpt.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run("verify", "--weights", str(cut), "--samples", "1"), str(cut))


def test_checkpoint_of_another_alpha(tmp_path, good_ckpt):
    blob = torch.load(good_ckpt, weights_only=True)
    plain = tmp_path / "plain.pt"
    torch.save(blob["state_dict"], plain)  # a bare state_dict: --alpha decides the shapes
    assert_one_line_error(run("quantize", "--alpha", "0.5", "--weights", str(plain), "-o", str(tmp_path / "x.tflite")),
                          "shape", "alpha 0.5")
    assert_one_line_error(run("quantize", "--alpha", "0.5", "--weights", str(good_ckpt), "-o",
                              str(tmp_path / "x.tflite")), "alpha 0.35")


def test_missing_checkpoint_and_calib_dir(tmp_path, good_ckpt):
    assert_one_line_error(run("verify", "--weights", str(tmp_path / "nope.pt")), "nope.pt", "no such file")
    assert_one_line_error(run("quantize", "--weights", str(good_ckpt), "--calib", str(tmp_path / "nodir"), "-o",
                              str(tmp_path / "x.tflite")), "nodir")


def test_resolution_too_small(tmp_path, good_ckpt):
    assert_one_line_error(run("quantize", "--weights", str(good_ckpt), "--resolution", "16", "-o",
                              str(tmp_path / "x.tflite")), "16x16", "too small")


def test_unbundled_alpha_lists_bundled():
    assert_one_line_error(run("verify", "--alpha", "0.6"), "alpha 0.6", "bundled")


@pytest.mark.parametrize("args,needle", [(["verify", "--alpah", "1"], "--alpah"), (["verify", "--alpha", "2"], "alpha"),
                                         (["verify", "--resolution", "big"], "resolution"), (["frobnicate"], "frobnicate")])
def test_bad_options(args, needle):
    assert_one_line_error(run(*args), needle)


def test_quantize_then_verify_json(tmp_path, good_ckpt):
    out = tmp_path / "m.tflite"
    p = run("quantize", "--weights", str(good_ckpt), "--calib-samples", "16", "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert out.read_bytes()[4:8] == b"TFL3"
    p = run("verify", "--weights", str(good_ckpt), "--calib-samples", "16", "--samples", "3", "--accuracy-samples",
            "20", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["samples"] == 3
    for key in ("reference_vs_tflm", "reference_vs_tflite"):
        assert r[key]["mismatches"] == 0 and r[key]["max_abs_diff"] == 0 and r[key]["elements"] == 6 * 10
    assert 0 <= r["float_top1"] <= 100 and 0 <= r["int8_top1"] <= 100


def test_calib_from_image_directory(tmp_path, good_ckpt):
    from PIL import Image
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(d / f"{i}.png")
    p = run("quantize", "--weights", str(good_ckpt), "--calib", str(d), "-o", str(tmp_path / "m.tflite"))
    assert p.returncode == 0, p.stderr
