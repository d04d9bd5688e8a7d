"""The main job: weights -> int8 -> memory plan -> C project -> build -> one checked inference, and its summary."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .build import build
from .emit import check_output_dir, render, write_project
from .errors import UserError
from .lower import Schedule, lower
from .memory import plan, replay
from .pipeline import CalibOptions, Compiled, compile_front
from .reference import run_int8
from .run import CModel, run_host_program
from .targets import Target, load_target
from .verify import quantize_images

SAMPLE_IMAGE = Path(__file__).parent / "samples" / "star.png"


@dataclass(frozen=True)
class Generated:
    compiled: Compiled
    schedule: Schedule
    target: Target
    project: Path
    variant: Path
    written: bool  # False: the directory already held these exact files


def default_output(target: str, info) -> Path:
    h, w = info.resolution
    res = f"{h}" if h == w else f"{h}x{w}"
    return Path("build") / f"{target}-a{info.alpha:g}-r{res}"


def options_record(target: str, alpha, resolution, weights, calib: CalibOptions) -> dict:
    """What the provenance header and metadata.json record; weights by content hash, not by path."""
    rec = {"target": target}
    if alpha is not None:
        rec["alpha"] = f"{alpha:g}"
    if resolution is not None:
        rec["resolution"] = f"{resolution[0]}x{resolution[1]}"
    if weights:
        rec["weights_sha256"] = hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    else:
        rec["weights"] = "bundled"
    rec["calibration"] = calib.method if calib.directory is None else f"{calib.method} on a user directory"
    rec["calib_samples"] = str(calib.samples)
    return rec


def generate(target_name: str, alpha, weights, resolution, calib: CalibOptions, output: str | None,
             force: bool = False, asan: bool = False, progress: bool = False,
             strategy: str = "streamed") -> Generated:
    target = load_target(target_name)
    if output:
        check_output_dir(Path(output), force)
    compiled = compile_front(alpha, weights, resolution, calib, progress=progress)
    memory_plan = plan(compiled.quant_graph, strategy)
    replay(compiled.quant_graph, memory_plan)  # every plan is checked, not trusted
    schedule = lower(compiled.quant_graph, memory_plan, target)
    files = render(schedule, options_record(target_name, alpha, resolution, weights, calib))
    project = Path(output) if output else default_output(target_name, compiled.info)
    written = write_project(files, project, force=force)
    variant = build(project, target, asan=asan) if target.kind == "host" else project
    return Generated(compiled, schedule, target, project, variant, written)


def load_image(path: Path, resolution: tuple[int, int]) -> np.ndarray:
    """An image file -> uint8 (1, H, W, 3) at the model's resolution (RGB, bilinear resize)."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((resolution[1], resolution[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)[None]
    except FileNotFoundError:
        raise UserError(f"image {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"image {path}: cannot be read as an image ({e})") from None


def run_one(gen: Generated, image: Path | None = None) -> dict:
    """One inference of the built program on an image (the bundled sample by default), checked against the
    reference."""
    g = gen.compiled.quant_graph
    x = quantize_images(g, load_image(image or SAMPLE_IMAGE, g.info.resolution))
    out, _ = run_host_program(gen.variant, x[0])
    ref = run_int8(g, x)[0]
    top = int(np.argmax(out))
    return {"image": str(image or SAMPLE_IMAGE.name), "top_class": top, "top_name": g.info.class_names[top],
            "bit_exact": bool(np.array_equal(out, ref)), "mismatches": int((out != ref).sum())}


def c_model(gen: Generated) -> CModel:
    g = gen.compiled.quant_graph
    return CModel(gen.variant, g.shapes[g.input], g.shapes[g.output][0])
