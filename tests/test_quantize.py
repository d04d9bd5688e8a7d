"""Quantizer: the TFLite int8 scheme's invariants, calibration methods, and accuracy of the int8 reference."""
import numpy as np
import pytest

from codegen import dataset, requant
from codegen.errors import UserError
from codegen.frontend import to_float_graph
from codegen.float_reference import run_float
from codegen.quantize import calibrate, normalize, qparams_for_range, quantize
from codegen.reference import dequantize, run_int8
from codegen.verify import quantize_images
from conftest import random_model, synthetic_info


@pytest.fixture(scope="module")
def graphs():
    info = synthetic_info(0.35)
    fg = to_float_graph(random_model(info), info)
    calib = dataset.make_split("calib", 48, info.resolution)[0]
    return fg, {m: quantize(fg, calibrate(fg, calib, m), m) for m in ("minmax", "percentile")}


def test_qparams_contain_zero_and_are_float32():
    for lo, hi in [(-1.0, 1.0), (0.0, 6.0), (0.5, 3.0), (-4.0, -1.0), (0.0, 0.0)]:
        q = qparams_for_range(lo, hi)
        assert -128 <= q.zero_point <= 127
        assert q.scale == float(np.float32(q.scale)) > 0
        assert abs(q.scale * (-128 - q.zero_point) - min(lo, 0.0)) <= q.scale  # 0 and the range are covered


def test_weights_bias_and_multipliers(graphs):
    fg, qgs = graphs
    qg = qgs["minmax"]
    for fop, op in zip(fg.ops, qg.ops):
        assert fop.name == op.name
        if op.kind in ("conv", "depthwise"):
            assert op.weight.dtype == np.int8 and op.weight.min() >= -127
            axis = 0 if op.kind == "conv" else 2
            other = tuple(i for i in range(op.weight.ndim) if i != axis)
            assert (np.abs(op.weight).max(axis=other) == 127).all()  # symmetric per channel, full range
            s_in = qg.qparams[op.input].scale
            s_out = qg.qparams[op.output].scale
            for c in range(len(op.bias)):
                assert op.bias[c] == requant.round_half_away(float(fop.bias[c]) / (s_in * float(op.weight_scale[c])))
                assert (op.multiplier[c], op.shift[c]) == requant.quantize_multiplier(
                    s_in * float(op.weight_scale[c]) / s_out)
            if op.activation == "relu6":
                zp = qg.qparams[op.output].zero_point
                assert op.act_min == zp == -128  # ReLU6 outputs start at 0
        if op.kind == "avgpool":
            assert qg.qparams[op.input] == qg.qparams[op.output]


def test_int8_reference_tracks_float(graphs):
    fg, qgs = graphs
    images = dataset.make_split("test", 16, fg.info.resolution)[0]
    want = run_float(fg, normalize(images, fg.info))
    for qg in qgs.values():
        out = qg.qparams[qg.output]
        got = dequantize(run_int8(qg, quantize_images(qg, images)), out.scale, out.zero_point)
        # random weights amplify rounding noise (trained models: see the accuracy test); the signal must survive
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.85
        assert len(np.unique(run_int8(qg, quantize_images(qg, images)))) > 20  # not saturated


def test_percentile_ranges_are_tighter(graphs):
    fg, qgs = graphs
    mm, pc = qgs["minmax"].qparams, qgs["percentile"].qparams
    assert all(pc[n].scale <= mm[n].scale * 1.0001 for n in mm)
    assert any(pc[n].scale < mm[n].scale * 0.99 for n in mm)


def test_calibration_errors():
    info = synthetic_info(0.35)
    fg = to_float_graph(random_model(info), info)
    with pytest.raises(UserError, match="64x64x3"):
        calibrate(fg, np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(UserError, match="method"):
        calibrate(fg, np.zeros((2, 96, 96, 3), np.uint8), method="kl")
