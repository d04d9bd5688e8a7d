"""Checkpoints: save and load (state_dict + metadata, weights_only), bundled defaults, and their validation."""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .errors import UserError
from .graph import ModelInfo
from .model import ArchConfig, MobileNetV2

FORMAT = "mnv2-codegen-checkpoint/1"
BUNDLED_DIR = Path(__file__).parent / "weights"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def bundled_checkpoints() -> dict[float, Path]:
    """{alpha: path} of the checkpoints shipped in the package."""
    out = {}
    for p in sorted(BUNDLED_DIR.glob("mnv2_a*_r96.pt")):
        out[float(p.name[len("mnv2_a"):-len("_r96.pt")])] = p
    return out


def arch_of(info: ModelInfo) -> ArchConfig:
    return ArchConfig(alpha=info.alpha, num_classes=len(info.class_names), activation=info.activation,
                      linear_bottleneck=info.linear_bottleneck, residual=info.residual, expansion=info.expansion)


def save_checkpoint(model: MobileNetV2, info: ModelInfo, path: str | Path, half: bool = False,
                    extra: dict | None = None) -> None:
    """Writes atomically. `half` stores float tensors as fp16 (they load back as float32)."""
    state = {k: (v.half() if half and v.is_floating_point() else v).clone() for k, v in model.state_dict().items()}
    meta = asdict(info)
    meta["resolution"] = list(info.resolution)
    meta["class_names"] = list(info.class_names)
    meta["mean"], meta["std"] = list(info.mean), list(info.std)
    blob = {"format": FORMAT, "state_dict": state, "meta": meta, "extra": extra or {}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(blob, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_failure(e: Exception) -> str:
    """What torch.load(weights_only=True) refused, in one line. Its refusals ("Weights only load failed...") wrap
    the unpickler's reason in advice to load with weights_only=False, which an untrusted file must never get."""
    text = str(e)
    if text.startswith("Weights only load failed"):
        _, marker, reason = text.partition("WeightsUnpickler error:")
        reason = " ".join((reason if marker else text.partition("\n")[2]).split())
        reason = reason.split(" Check the documentation")[0].split(" Please use ")[0]
        if "GLOBAL" in reason:  # a pickled reference to a function or class: code would run on load
            return (f"refused: it holds Python objects other than tensors and containers ({reason[:120]}); only a "
                    f"state_dict or an mnv2-codegen checkpoint is loaded (torch.load with weights_only=True)")
        text = reason
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"cannot be read as a PyTorch checkpoint (corrupt or truncated?): {first[:160]}"


def _read(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"checkpoint {path}: no such file")
    if path.is_dir():
        raise UserError(f"checkpoint {path}: is a directory, not a file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError, KeyError,
            AttributeError, TypeError, IndexError) as e:
        raise UserError(f"checkpoint {path}: {_load_failure(e)}") from None
    if not isinstance(blob, dict):
        raise UserError(f"checkpoint {path}: holds a {type(blob).__name__}, not a state_dict")
    return blob


def load_checkpoint(path: str | Path, alpha: float | None = None, resolution: tuple[int, int] | None = None,
                    overrides: dict | None = None) -> tuple[MobileNetV2, ModelInfo]:
    """Our checkpoint format or a bare torchvision-layout state_dict (then `alpha` is required; ImageNet
    normalization is assumed). `resolution` overrides the trained resolution. Mismatches are UserErrors."""
    path = Path(path)
    blob = _read(path)
    if blob.get("format") == FORMAT:
        state, meta = blob["state_dict"], dict(blob["meta"])
        if alpha is not None and abs(alpha - meta["alpha"]) > 1e-9:
            raise UserError(f"checkpoint {path} is alpha {meta['alpha']:g}, but --alpha {alpha:g} was given")
        info = ModelInfo(alpha=float(meta["alpha"]), resolution=tuple(meta["resolution"]),
                         class_names=tuple(meta["class_names"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                         activation=meta.get("activation", "relu6"),
                         linear_bottleneck=meta.get("linear_bottleneck", True),
                         residual=meta.get("residual", True), expansion=int(meta.get("expansion", 6)))
    else:
        state = blob.get("state_dict", blob)
        if not isinstance(state, dict) or "classifier.1.weight" not in state:
            raise UserError(f"checkpoint {path}: not a MobileNetV2 state_dict (no 'classifier.1.weight')")
        if alpha is None:
            raise UserError(f"checkpoint {path} carries no metadata: give --alpha")
        k = int(state["classifier.1.weight"].shape[0])
        info = ModelInfo(alpha=alpha, resolution=(224, 224), class_names=tuple(f"class_{i}" for i in range(k)),
                         mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if overrides:
        info = replace(info, **overrides)
    if resolution is not None:
        info = replace(info, resolution=tuple(resolution))
    try:
        model = MobileNetV2(arch_of(info))
    except ValueError as e:
        raise UserError(f"checkpoint {path}: {e}") from None
    _check_state(path, model, state, info)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval(), info


def _check_state(path: Path, model: MobileNetV2, state: dict, info: ModelInfo) -> None:
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise UserError(f"checkpoint {path}: missing '{key}' (not a MobileNetV2 of alpha {info.alpha:g}?)")
        got = state[key]
        if not isinstance(got, torch.Tensor):
            raise UserError(f"checkpoint {path}: '{key}' is not a tensor")
        if tuple(got.shape) != tuple(value.shape):
            raise UserError(f"checkpoint {path}: '{key}' has shape {tuple(got.shape)}, alpha {info.alpha:g} expects "
                            f"{tuple(value.shape)} (wrong --alpha?)")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise UserError(f"checkpoint {path}: '{key}' holds NaN or infinite values")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise UserError(f"checkpoint {path}: unexpected key '{unexpected[0]}' (not a MobileNetV2 of alpha {info.alpha:g}?)")


def resolve_weights(alpha: float | None, weights: str | None, resolution: tuple[int, int] | None = None):
    """The user's --weights, or the bundled checkpoint for --alpha; a clear error listing what is bundled."""
    if weights:
        return load_checkpoint(weights, alpha, resolution)
    bundled = bundled_checkpoints()
    if alpha is None:
        raise UserError("give --alpha (bundled: " + ", ".join(f"{a:g}" for a in bundled) + ") or --weights CKPT")
    for a, p in bundled.items():
        if abs(a - alpha) < 1e-9:
            return load_checkpoint(p, alpha, resolution)
    listing = ", ".join(f"{a:g}" for a in bundled) or "none"
    raise UserError(f"no bundled checkpoint for alpha {alpha:g} (bundled: {listing}); give --weights CKPT "
                    f"(train one with `mnv2-codegen train --alpha {alpha:g}`)")
