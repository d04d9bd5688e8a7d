"""Generated C on the host against the numpy int8 reference: zero mismatching elements on >= 100 inputs."""
import numpy as np
import pytest

from codegen.generate import c_model, generate
from codegen.pipeline import CalibOptions
from codegen.reference import run_int8
from codegen.run import run_host_program
from codegen.verify import verification_inputs

INPUTS = 50  # random inputs, and as many synthetic test images: 100 in all


def check(gen, asan=False):
    g = gen.compiled.quant_graph
    rand, data = verification_inputs(g, INPUTS, seed=7)
    x = np.concatenate([rand, data])
    want = run_int8(g, x)
    if asan:  # the sanitized program, in one process over all inputs; any report fails the run
        got, _ = run_host_program(gen.variant, x)
    else:
        got = c_model(gen).predict(x)
    assert got.shape == want.shape == (2 * INPUTS, g.shapes[g.output][0])
    assert int((got != want).sum()) == 0
    assert len(np.unique(want)) > 10


def gen_for(tmp_path, alpha=None, weights=None, resolution=None, asan=False, samples=64):
    return generate("host", alpha, weights, resolution, CalibOptions(samples=samples), str(tmp_path / "proj"),
                    asan=asan)


@pytest.mark.parametrize("alpha", [0.35, 0.5, 0.75, 1.0])
def test_bundled_96(tmp_path, alpha):
    check(gen_for(tmp_path, alpha))


@pytest.mark.slow
def test_bundled_alpha1_at_224(tmp_path):
    check(gen_for(tmp_path, 1.0, resolution=(224, 224), samples=16))


@pytest.mark.parametrize("res", [(160, 160), (128, 96)])
def test_other_resolutions(tmp_path, res):
    check(gen_for(tmp_path, 0.35, resolution=res))


def test_unbundled_alpha(tmp_path, checkpoint_factory):
    check(gen_for(tmp_path, weights=str(checkpoint_factory(1.4)), samples=32))


@pytest.mark.parametrize("ablation", [{"activation": "relu"}, {"linear_bottleneck": False}, {"residual": False},
                                      {"expansion": 4}])
def test_ablations(tmp_path, checkpoint_factory, ablation):
    check(gen_for(tmp_path, weights=str(checkpoint_factory(0.35, **ablation)), samples=32))


@pytest.mark.parametrize("alpha", [0.35, 1.0])
def test_sanitizers_and_guard_bytes(tmp_path, alpha):
    check(gen_for(tmp_path, alpha, asan=True), asan=True)


@pytest.mark.slow
def test_sanitizers_and_guard_bytes_column_strips(tmp_path):
    """alpha 1.0 @ 224 runs its chain in two column strips (holes in the consumed image): under AddressSanitizer /
    UBSan with guard bytes around the arena, bit-exact on a few inputs."""
    gen = gen_for(tmp_path, 1.0, resolution=(224, 224), asan=True, samples=16)
    assert any(u.strips for u in gen.schedule.plan.units)
    g = gen.compiled.quant_graph
    rand, data = verification_inputs(g, 2, seed=11)
    x = np.concatenate([rand, data])
    got, _ = run_host_program(gen.variant, x)
    assert np.array_equal(got, run_int8(g, x))


@pytest.mark.parametrize("ablation", [{"linear_bottleneck": False}, {"residual": False}])
def test_sanitizers_ablations(tmp_path, checkpoint_factory, ablation):
    check(gen_for(tmp_path, weights=str(checkpoint_factory(0.35, **ablation)), asan=True, samples=32), asan=True)
