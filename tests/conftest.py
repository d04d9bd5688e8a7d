"""Shared fixtures: small models with realistic activation ranges, saved as checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from codegen import dataset
from codegen.checkpoint import arch_of, save_checkpoint
from codegen.graph import ModelInfo
from codegen.model import MobileNetV2
from codegen.train import SYNTHETIC_MEAN, SYNTHETIC_STD, to_tensor


def random_model(info: ModelInfo, seed: int = 0, bn_images: int = 32) -> MobileNetV2:
    """Random weights, random BN affine, BN statistics re-estimated on synthetic images so that every layer sees
    activations of a realistic scale (not the exploding/vanishing ranges of raw random init)."""
    torch.manual_seed(seed)
    model = MobileNetV2(arch_of(info))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.6)
            m.momentum = None  # cumulative average over the re-estimation batches
            m.reset_running_stats()
    with torch.no_grad():
        model.classifier[1].weight.normal_(0, 0.05)
        model.classifier[1].bias.uniform_(-0.1, 0.1)
        model.train()
        images, _ = dataset.make_split("calib", bn_images, info.resolution, seed=seed + 1)
        for i in range(0, bn_images, 16):
            model(to_tensor(images[i:i + 16], info))
    return model.eval()


def synthetic_info(alpha: float, resolution=(96, 96), **ablation) -> ModelInfo:
    return ModelInfo(alpha=alpha, resolution=tuple(resolution), class_names=dataset.CLASS_NAMES,
                     mean=SYNTHETIC_MEAN, std=SYNTHETIC_STD, **ablation)


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory):
    """make(alpha, resolution=(96, 96), **ablation) -> path of a saved random checkpoint (cached per arguments)."""
    cache: dict = {}

    def make(alpha: float, resolution=(96, 96), **ablation):
        key = (alpha, tuple(resolution), tuple(sorted(ablation.items())))
        if key not in cache:
            info = synthetic_info(alpha, resolution, **ablation)
            path = tmp_path_factory.mktemp("ckpt") / f"a{alpha:g}.pt"
            save_checkpoint(random_model(info), info, path)
            cache[key] = path
        return cache[key]

    return make


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
