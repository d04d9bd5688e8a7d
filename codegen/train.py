"""Training a MobileNetV2 on the synthetic dataset or an ImageFolder directory, on the CPU, into a checkpoint."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from .progress import progress

from . import dataset
from .checkpoint import arch_of, save_checkpoint
from .errors import UserError
from .graph import ModelInfo
from .model import MobileNetV2

SYNTHETIC_MEAN = (0.5, 0.5, 0.5)
SYNTHETIC_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TrainConfig:
    alpha: float
    resolution: tuple[int, int] = (96, 96)
    data: str | None = None  # ImageFolder root (with train/ and test/ sub-directories, or one folder to split)
    train_size: int = 12000  # synthetic only
    test_size: int = 2000  # synthetic only
    epochs: int = 8
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-5
    seed: int = 0
    activation: str = "relu6"
    linear_bottleneck: bool = True
    residual: bool = True
    expansion: int = 6


def to_tensor(images: np.ndarray, info: ModelInfo) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalized float (N, 3, H, W), channels-last in memory."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    x = (x - torch.tensor(info.mean)) / torch.tensor(info.std)
    return x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def load_data(cfg: TrainConfig):
    """(train images, train labels, test images, test labels, class names, mean, std)."""
    if cfg.data is None:
        tr = dataset.make_split("train", cfg.train_size, cfg.resolution, cfg.seed, progress=True)
        te = dataset.make_split("test", cfg.test_size, cfg.resolution, cfg.seed, progress=True)
        return (*tr, *te, dataset.CLASS_NAMES, SYNTHETIC_MEAN, SYNTHETIC_STD)
    root = os.path.abspath(cfg.data)
    if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
        xtr, ytr, names = dataset.load_image_folder(os.path.join(root, "train"), cfg.resolution)
        xte, yte, names_te = dataset.load_image_folder(os.path.join(root, "test"), cfg.resolution)
        if names_te != names:
            raise UserError(f"{root}: train/ and test/ have different class folders")
    else:
        x, y, names = dataset.load_image_folder(root, cfg.resolution)
        order = np.random.default_rng(cfg.seed).permutation(len(x))
        cut = max(1, len(x) // 10)
        xte, yte, xtr, ytr = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    xall = np.concatenate([xtr]).astype(np.float64) / 255.0
    mean = tuple(float(v) for v in xall.mean(axis=(0, 1, 2)))
    std = tuple(float(max(v, 1e-3)) for v in xall.std(axis=(0, 1, 2)))
    return xtr, ytr, xte, yte, tuple(names), mean, std


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, info: ModelInfo, batch: int = 200) -> float:
    """Float top-1 in percent."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            logits = model(to_tensor(images[i:i + batch], info))
            correct += int((logits.argmax(1).numpy() == labels[i:i + batch]).sum())
    return 100.0 * correct / max(1, len(images))


def train(cfg: TrainConfig, out_path: str, half: bool = True, command: str = "") -> dict:
    """Trains, evaluates on the held-out split, saves; returns a summary dict."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    xtr, ytr, xte, yte, names, mean, std = load_data(cfg)
    info = ModelInfo(alpha=cfg.alpha, resolution=tuple(cfg.resolution), class_names=tuple(names), mean=mean, std=std,
                     activation=cfg.activation, linear_bottleneck=cfg.linear_bottleneck, residual=cfg.residual,
                     expansion=cfg.expansion)
    model = MobileNetV2(arch_of(info)).to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(xtr) / cfg.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    rng = np.random.default_rng(cfg.seed)
    start = time.time()
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(xtr))
        bar = progress(range(steps_per_epoch), f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
        running = 0.0
        for step in bar:
            idx = order[step * cfg.batch:(step + 1) * cfg.batch]
            x = to_tensor(xtr[idx], info)
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x[flip] = x[flip].flip(3)
            loss = loss_fn(model(x), torch.from_numpy(ytr[idx]).long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running = 0.9 * running + 0.1 * float(loss) if step else float(loss)
            bar.set_postfix(loss=f"{running:.3f}")
        acc = evaluate(model, xte, yte, info)
        print(f"epoch {epoch + 1}: test top-1 {acc:.2f}%", flush=True)
    if half:  # evaluate exactly what is stored
        with torch.no_grad():
            for v in model.state_dict().values():
                if v.is_floating_point():
                    v.copy_(v.half().float())
    acc = evaluate(model, xte, yte, info)
    minutes = (time.time() - start) / 60.0
    summary = {"float_top1": round(acc, 2), "test_size": int(len(xte)), "train_size": int(len(xtr)),
               "epochs": cfg.epochs, "minutes": round(minutes, 1), "command": command}
    save_checkpoint(model, info, out_path, half=half, extra=summary)
    return summary
