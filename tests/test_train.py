"""The `train` command: synthetic and ImageFolder data, checkpoint metadata, fp16 storage, and reuse downstream."""
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from codegen import dataset
from codegen.checkpoint import FORMAT, load_checkpoint
from test_cli import ROOT, assert_one_line_error, run


def test_train_synthetic_tiny(tmp_path):
    out = tmp_path / "m.pt"
    p = run("train", "--alpha", "0.35", "--resolution", "48x40", "--epochs", "1", "--train-size", "64",
            "--test-size", "20", "--batch", "32", "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "float top-1" in p.stdout
    blob = torch.load(out, weights_only=True)
    assert blob["format"] == FORMAT
    assert blob["state_dict"]["features.0.0.weight"].dtype == torch.float16  # fp16 storage by default
    assert blob["extra"]["test_size"] == 20 and "train" in blob["extra"]["command"]
    model, info = load_checkpoint(out)
    assert info.resolution == (48, 40) and info.class_names == dataset.CLASS_NAMES and info.alpha == 0.35
    assert model.features[0][0].weight.dtype == torch.float32


def test_train_image_folder(tmp_path):
    root = tmp_path / "data"
    for cls, colour in (("cats", 30), ("dogs", 220)):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            img = np.full((40, 50, 3), colour, np.uint8)
            img[i:i + 5] = 255 - colour
            Image.fromarray(img).save(root / cls / f"{i}.png")
    out = tmp_path / "folder.pt"
    p = run("train", "--alpha", "0.35", "--resolution", "32", "--data", str(root), "--epochs", "1", "--batch", "4",
            "--activation", "relu", "--no-residual", "--expansion", "4", "-o", str(out))
    assert p.returncode == 0, p.stderr
    model, info = load_checkpoint(out)
    assert info.class_names == ("cats", "dogs")
    assert info.activation == "relu" and not info.residual and info.expansion == 4
    p = run("verify", "--weights", str(out), "--calib", str(root), "--samples", "2", "--json")
    assert p.returncode == 0, p.stderr


def test_train_bad_data_dir(tmp_path):
    assert_one_line_error(run("train", "--alpha", "0.35", "--data", str(tmp_path / "none"), "-o",
                              str(tmp_path / "x.pt")), "none")
    assert not (tmp_path / "x.pt").exists()
