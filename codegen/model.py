"""MobileNetV2 in PyTorch (paper Table 2), with torchvision's exact state_dict layout and the paper's ablations."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Paper Table 2 bottlenecks: (expansion t, output channels c, repeats n, first stride s).
BOTTLENECKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
MIN_RESOLUTION = 32  # five stride-2 stages: 32 px leaves a 1x1 map before pooling
MAX_ALPHA = 1.4


def make_divisible(value: float, divisor: int = 8) -> int:
    """The paper's channel rounding (as torchvision): nearest multiple of `divisor`, never below 90% of `value`."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


@dataclass(frozen=True)
class ArchConfig:
    """Everything that fixes the architecture; `expansion` replaces t=6 of Table 2 (t=1 of the first block stays)."""
    alpha: float = 1.0
    num_classes: int = 1000
    activation: str = "relu6"  # relu6 | relu
    linear_bottleneck: bool = True  # False: ReLU6 (or ReLU) after the projection too
    residual: bool = True
    expansion: int = 6
    dropout: float = 0.2

    def __post_init__(self):
        if not 0.0 < self.alpha <= MAX_ALPHA:
            raise ValueError(f"alpha {self.alpha} is outside (0, {MAX_ALPHA}]")
        if self.activation not in ("relu6", "relu"):
            raise ValueError(f"activation {self.activation!r} is not relu6 or relu")
        if self.expansion < 1:
            raise ValueError(f"expansion factor {self.expansion} must be >= 1")
        if self.num_classes < 1:
            raise ValueError(f"class count {self.num_classes} must be >= 1")

    def stem_channels(self) -> int:
        return make_divisible(STEM_CHANNELS * self.alpha)

    def last_channels(self) -> int:
        return make_divisible(LAST_CHANNELS * max(1.0, self.alpha))

    def blocks(self) -> list[tuple[int, int, int, int]]:
        """Per inverted-residual block: (in channels, expanded channels, out channels, stride)."""
        out, cin = [], self.stem_channels()
        for t, c, n, s in BOTTLENECKS:
            t = t if t == 1 else self.expansion
            cout = make_divisible(c * self.alpha)
            for i in range(n):
                out.append((cin, int(round(cin * t)), cout, s if i == 0 else 1))
                cin = cout
        return out


def _act(cfg: ArchConfig) -> nn.Module:
    return nn.ReLU6(inplace=True) if cfg.activation == "relu6" else nn.ReLU(inplace=True)


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> activation; indices 0, 1, 2 as torchvision's Conv2dNormActivation."""

    def __init__(self, cfg: ArchConfig, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), _act(cfg))


class InvertedResidual(nn.Module):
    """Expansion 1x1 (omitted when t=1) -> depthwise 3x3 -> linear projection 1x1 [-> activation if non-linear]."""

    def __init__(self, cfg: ArchConfig, cin: int, hidden: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.use_res_connect = cfg.residual and stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvBNAct(cfg, cin, hidden, kernel=1))
        layers += [ConvBNAct(cfg, hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        if not cfg.linear_bottleneck:
            layers.append(_act(cfg))  # parameter-free: the state_dict keys stay torchvision's
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, cfg: ArchConfig = ArchConfig()):
        super().__init__()
        self.cfg = cfg
        features: list[nn.Module] = [ConvBNAct(cfg, 3, cfg.stem_channels(), stride=2)]
        for cin, hidden, cout, stride in cfg.blocks():
            features.append(InvertedResidual(cfg, cin, hidden, cout, stride))
        features.append(ConvBNAct(cfg, cfg.blocks()[-1][2], cfg.last_channels(), kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.last_channels(), cfg.num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)
