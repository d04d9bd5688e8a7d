"""The int8 reference against both oracles, TFLM and tflite-runtime BUILTIN_REF: zero mismatching elements."""
import numpy as np
import pytest

from codegen.export import export_tflite
from codegen.oracles import tflm_intermediates
from codegen.pipeline import CalibOptions, compile_front
from codegen.reference import run_int8
from codegen.verify import verification_inputs, verify_oracles

SAMPLES = 20  # random inputs, and as many synthetic test images


def check(quant_graph):
    rand, data = verification_inputs(quant_graph, SAMPLES)
    result = verify_oracles(quant_graph, np.concatenate([rand, data]))
    k = quant_graph.shapes[quant_graph.output][0]
    for key in ("reference_vs_tflm", "reference_vs_tflite"):
        assert result[key]["elements"] == 2 * SAMPLES * k
        assert result[key]["mismatches"] == 0, (key, result[key])
    outs = run_int8(quant_graph, data)
    assert len(np.unique(outs)) > 10  # the comparison saw real, varied logits, not saturated ones


@pytest.mark.parametrize("alpha", [0.35, 0.5, 0.75, 1.0])
def test_bundled_96(alpha):
    check(compile_front(alpha, None, calib=CalibOptions(samples=64)).quant_graph)


@pytest.mark.slow
def test_bundled_alpha1_at_224():
    check(compile_front(1.0, None, (224, 224), calib=CalibOptions(samples=16)).quant_graph)


@pytest.mark.parametrize("alpha,res", [(1.4, (96, 96)), (0.6, (128, 96))])
def test_unbundled_alpha(checkpoint_factory, alpha, res):
    check(compile_front(None, str(checkpoint_factory(alpha, res)), calib=CalibOptions(samples=32)).quant_graph)


@pytest.mark.parametrize("ablation", [{"activation": "relu"}, {"linear_bottleneck": False}, {"residual": False},
                                      {"expansion": 4}, {"activation": "relu", "linear_bottleneck": False}])
def test_ablations(checkpoint_factory, ablation):
    path = checkpoint_factory(0.35, **ablation)
    for method in ("minmax", "percentile"):
        check(compile_front(None, str(path), calib=CalibOptions(method=method, samples=32)).quant_graph)


def test_every_intermediate_tensor_matches_tflm():
    qg = compile_front(0.35, None, calib=CalibOptions(samples=64)).quant_graph
    model = export_tflite(qg)
    _, data = verification_inputs(qg, 2)
    for x in data:
        ours = run_int8(qg, x[None], keep_all=True)
        theirs = tflm_intermediates(model, x)
        assert set(ours) <= set(theirs)
        for name, value in ours.items():
            assert np.array_equal(value[0], theirs[name].reshape(value.shape[1:])), name
