import pytest
import torch

from codegen.model import ArchConfig, MobileNetV2, make_divisible


def test_torchvision_layout_and_size():
    m = MobileNetV2(ArchConfig(1.0, 1000))
    sd = m.state_dict()
    # torchvision.models.mobilenet_v2(): 3,504,872 parameters, 314 state_dict entries
    assert sum(p.numel() for p in m.parameters()) == 3_504_872
    assert len(sd) == 314
    assert sd["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert sd["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)  # t=1: depthwise first
    assert sd["features.1.conv.1.weight"].shape == (16, 32, 1, 1)
    assert sd["features.2.conv.0.0.weight"].shape == (96, 16, 1, 1)
    assert sd["features.17.conv.2.weight"].shape == (320, 960, 1, 1)
    assert sd["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert sd["classifier.1.weight"].shape == (1000, 1280)


def test_table2_blocks():
    blocks = ArchConfig(1.0).blocks()
    assert len(blocks) == 17
    assert [b[3] for b in blocks] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert [b[2] for b in blocks] == [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]


@pytest.mark.parametrize("alpha,stem,last,final", [(0.35, 16, 1280, 112), (0.5, 16, 1280, 160),
                                                    (0.75, 24, 1280, 240), (1.4, 48, 1792, 448)])
def test_width_multiplier_rounding(alpha, stem, last, final):
    cfg = ArchConfig(alpha)
    assert cfg.stem_channels() == stem
    assert cfg.last_channels() == last
    assert cfg.blocks()[-1][2] == final
    assert all(c % 8 == 0 for b in cfg.blocks() for c in (b[0], b[2]))


def test_make_divisible_never_drops_below_90_percent():
    for v in range(1, 2000):
        assert make_divisible(v) >= 0.9 * v and make_divisible(v) % 8 == 0


def test_residual_only_when_shapes_allow():
    m = MobileNetV2(ArchConfig(1.0))
    res = [blk.use_res_connect for blk in list(m.features)[1:-1]]
    assert res == [False, False, True, False, True, True, False, True, True, True, False, True, True, False, True,
                   True, False]
    assert not any(b.use_res_connect for b in list(MobileNetV2(ArchConfig(1.0, residual=False)).features)[1:-1])


def test_ablations_keep_keys_and_change_function():
    torch.manual_seed(0)
    base = MobileNetV2(ArchConfig(0.5, 10))
    for m in base.modules():  # large enough activations that ReLU6 clips somewhere
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(2.0, 4.0)
            m.bias.data.uniform_(-1.0, 1.0)
    keys = set(base.state_dict())
    x = torch.randn(2, 3, 64, 80)
    outs = []
    for kw in ({}, {"activation": "relu"}, {"linear_bottleneck": False}, {"residual": False}):
        m = MobileNetV2(ArchConfig(0.5, 10, **kw)).eval()
        assert set(m.state_dict()) == keys
        m.load_state_dict(base.state_dict())
        with torch.no_grad():
            outs.append(m(x))
        assert outs[-1].shape == (2, 10)  # non-square input
    for o in outs[1:]:
        assert not torch.allclose(o, outs[0], rtol=1e-3, atol=0)
    t4 = MobileNetV2(ArchConfig(0.5, 10, expansion=4)).state_dict()
    assert t4["features.2.conv.0.0.weight"].shape[0] == 8 * 4  # block 1 of alpha 0.5 outputs 8 channels


@pytest.mark.parametrize("kw", [{"alpha": 0.0}, {"alpha": 1.5}, {"activation": "gelu"}, {"expansion": 0}])
def test_invalid_configs(kw):
    with pytest.raises(ValueError):
        ArchConfig(**kw)
