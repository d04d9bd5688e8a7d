"""Bundled checkpoints: float top-1 on the held-out synthetic split, and the int8 drop of the reference."""
import pytest

from codegen import dataset
from codegen.checkpoint import bundled_checkpoints, load_checkpoint
from codegen.pipeline import compile_front
from codegen.train import evaluate
from codegen.verify import accuracy

BUNDLED = (0.35, 0.5, 0.75, 1.0)


def test_every_alpha_is_bundled():
    assert sorted(bundled_checkpoints()) == list(BUNDLED)


@pytest.mark.parametrize("alpha", BUNDLED)
def test_bundled_float_top1_at_least_90(alpha):
    model, info = load_checkpoint(bundled_checkpoints()[alpha])
    assert info.resolution == (96, 96) and info.class_names == dataset.CLASS_NAMES
    images, labels = dataset.make_split("test", 1000, info.resolution)
    assert evaluate(model, images, labels, info) >= 90.0


def test_int8_drop_at_most_one_point_for_alpha_035():
    c = compile_front(0.35, None)
    images, labels = dataset.make_split("test", 1000, c.info.resolution)
    r = accuracy(c.model, c.quant_graph, images, labels)
    assert r["float_top1"] >= 90.0
    assert r["float_top1"] - r["int8_top1"] <= 1.0, r
