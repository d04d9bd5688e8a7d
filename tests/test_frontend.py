"""FloatGraph (BatchNorm folded, numpy float) against the PyTorch model."""
import numpy as np
import pytest
import torch

from codegen import dataset
from codegen.float_reference import run_float
from codegen.frontend import to_float_graph
from codegen.errors import UserError
from codegen.graph import FConv, FDepthwise
from codegen.quantize import normalize
from codegen.train import to_tensor
from conftest import random_model, synthetic_info

CASES = [(0.35, (96, 96), {}), (1.0, (96, 96), {}), (0.5, (128, 96), {}), (1.4, (64, 64), {}),
         (0.35, (96, 96), {"activation": "relu"}), (0.35, (96, 96), {"linear_bottleneck": False}),
         (0.35, (96, 96), {"residual": False}), (0.35, (96, 96), {"expansion": 4})]


@pytest.mark.parametrize("alpha,res,kw", CASES)
def test_float_graph_matches_torch(alpha, res, kw):
    info = synthetic_info(alpha, res, **kw)
    model = random_model(info)
    graph = to_float_graph(model, info)
    images, _ = dataset.make_split("test", 4, res)
    with torch.no_grad():
        want = model(to_tensor(images, info)).double().numpy()
    got = run_float(graph, normalize(images, info))
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_graph_structure_follows_the_model():
    info = synthetic_info(1.0)
    g = to_float_graph(random_model(info), info)
    kinds = [op.kind for op in g.ops]
    assert kinds.count("conv") == 35 and kinds.count("depthwise") == 17 and kinds.count("add") == 10
    assert kinds[-2:] == ["avgpool", "dense"]
    stem = g.ops[0]
    assert isinstance(stem, FConv) and stem.stride == 2 and stem.padding == (1, 1, 1, 1)
    assert g.shapes["stem"] == (48, 48, 32) and g.shapes["head"] == (3, 3, 1280)
    dws = [op for op in g.ops if isinstance(op, FDepthwise)]
    assert [op.stride for op in dws].count(2) == 4
    for op in g.ops:  # frozen: arrays are read-only
        if hasattr(op, "weight"):
            assert not op.weight.flags.writeable


def test_resolution_too_small():
    info = synthetic_info(0.35, (16, 16))
    with pytest.raises(UserError, match="too small"):
        to_float_graph(random_model(synthetic_info(0.35)), info)
