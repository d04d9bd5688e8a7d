"""Image data for training and calibration: the built-in synthetic-shapes dataset and user image-folder loaders."""
from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from .errors import UserError

# Class k of the synthetic dataset is CLASS_NAMES[k]; a label is an int in [0, 10).
CLASS_NAMES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "crescent", "arrow", "bowtie", "frame",
)
# Disjoint sample streams: sample i of split s is seeded by (seed, SPLITS.index(s), i).
SPLITS: tuple[str, ...] = ("train", "test", "calib")

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")

Size = Union[int, Sequence[int]]

# Determinism contract: every value that reaches a pixel comes from Generator.random / Generator.integers
# (PCG64, platform independent) and IEEE-exact float ops (+ - * / sqrt, floor, comparisons). No array
# transcendental functions (sin, exp, ...) are used, since their SIMD implementations differ by CPU.

# Polygon vertices in shape-local unit coordinates (x right, y down); every shape fits in the unit disk.
_TRIANGLE = np.array([(0.0, -1.0), (0.866, 0.5), (-0.866, 0.5)], dtype=np.float32)
_STAR = np.array([
    (0.0, -1.0), (0.2645, -0.3641), (0.9511, -0.309), (0.428, 0.1391), (0.5878, 0.809),
    (0.0, 0.45), (-0.5878, 0.809), (-0.428, 0.1391), (-0.9511, -0.309), (-0.2645, -0.3641),
], dtype=np.float32)
_ARROW = np.array([
    (-0.92, -0.25), (0.05, -0.25), (0.05, -0.7), (0.96, 0.0), (0.05, 0.7), (0.05, 0.25), (-0.92, 0.25),
], dtype=np.float32)
# Self-intersecting on purpose: the even-odd rule turns it into two triangles meeting at the centre.
_BOWTIE = np.array([(-0.8, -0.58), (0.8, 0.58), (0.8, -0.58), (-0.8, 0.58)], dtype=np.float32)

_MAX_ASPECT = 1.2  # shapes are stretched by sqrt(a) along one local axis, a in [1/_MAX_ASPECT, _MAX_ASPECT]
_TAN_PI_8 = 0.41421356237309503  # tan(22.5 deg): rational rotations with |t| <= this cover one quadrant


def _norm_size(size: Size) -> tuple[int, int]:
    """(height, width) from an int or a pair; both must be integers >= 8."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        if len(size) != 2:
            raise ValueError(f"size must be an int or (height, width), got {size!r}")
        h, w = int(size[0]), int(size[1])
    if h < 8 or w < 8:
        raise ValueError(f"image size must be at least 8x8, got {h}x{w}")
    return h, w


def _split_id(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


@lru_cache(maxsize=16)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: ys [h, 1] and xs [1, w], float32, in pixels (0.5 .. h-0.5 / w-0.5)."""
    ys = (np.arange(h, dtype=np.float32) + np.float32(0.5))[:, None]
    xs = (np.arange(w, dtype=np.float32) + np.float32(0.5))[None, :]
    ys.flags.writeable = False
    xs.flags.writeable = False
    return ys, xs


@lru_cache(maxsize=64)
def _bilinear_taps(n: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps to upsample g samples to n pixels: out = v[i] + (v[i + 1] - v[i]) * f; i int [n] in [0, g-2], f float32 [n]."""
    pos = (np.arange(n, dtype=np.float64) + 0.5) * (g - 1) / n
    i0 = np.minimum(np.floor(pos).astype(np.int64), g - 2)
    f = (pos - i0).astype(np.float32)
    i0.flags.writeable = False
    f.flags.writeable = False
    return i0, f


def _rotation(rng: np.random.Generator) -> tuple[float, float]:
    """A unit vector (cos a, sin a), a roughly uniform over the circle, built without trigonometric functions."""
    t = (rng.random() * 2.0 - 1.0) * _TAN_PI_8
    c, s = (1.0 - t * t) / (1.0 + t * t), 2.0 * t / (1.0 + t * t)
    for _ in range(int(rng.integers(4))):  # quarter turns are exact
        c, s = -s, c
    return c, s


def _polygon_mask(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test; u, v broadcastable float arrays, poly [n, 2] vertices (x, y)."""
    inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    n = len(poly)
    for k in range(n):
        x1, y1 = float(poly[k, 0]), float(poly[k, 1])
        x2, y2 = float(poly[(k + 1) % n, 0]), float(poly[(k + 1) % n, 1])
        if y1 == y2:
            continue  # horizontal edges never cross a horizontal ray
        crosses = (v < y1) != (v < y2)
        x_at_v = (v - y1) * ((x2 - x1) / (y2 - y1)) + x1
        inside ^= crosses & (u < x_at_v)
    return inside


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of class `label` in local unit coordinates (u, v); the shape lies inside u^2 + v^2 <= 1."""
    name = CLASS_NAMES[label]
    if name in ("circle", "ring", "crescent"):
        d2 = u * u + v * v
        if name == "circle":
            return d2 <= 0.95
        if name == "ring":
            return (d2 <= 1.0) & (d2 >= 0.36)
        du = u - 0.45
        return (d2 <= 1.0) & (du * du + v * v >= 0.64)
    if name in ("square", "frame", "cross"):
        au, av = np.abs(u), np.abs(v)
        if name == "square":
            return np.maximum(au, av) <= 0.68
        if name == "frame":
            m = np.maximum(au, av)
            return (m <= 0.7) & (m >= 0.44)
        return ((au <= 0.27) & (av <= 0.95)) | ((av <= 0.27) & (au <= 0.95))
    poly = {"triangle": _TRIANGLE, "star": _STAR, "arrow": _ARROW, "bowtie": _BOWTIE}[name]
    return _polygon_mask(u, v, poly)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour, float32 [3] in [0, 255]."""
    return (rng.random(3) * 255.0).astype(np.float32)


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.sqrt(np.dot(d, d)))


def _box(cy: float, cx: float, r: float, h: int, w: int) -> tuple[int, int, int, int]:
    """Pixel rows [y0, y1) and columns [x0, x1) covering the disc (cy, cx, r), clipped to the image."""
    return (max(0, int(math.floor(cy - r))), min(h, int(math.ceil(cy + r)) + 1),
            max(0, int(math.floor(cx - r))), min(w, int(math.ceil(cx + r)) + 1))


def _paint_clutter(img: np.ndarray, items: list, ys: np.ndarray, xs: np.ndarray) -> None:
    """Paints distractor items (segments and dots) in place; img float32 [H, W, 3]."""
    h, w = img.shape[:2]
    for kind, colour, geom in items:
        if kind == "segment":
            ay, ax, by, bx, half = geom
            y0, y1, x0, x1 = _box((ay + by) / 2, (ax + bx) / 2,
                                  math.sqrt((ay - by) ** 2 + (ax - bx) ** 2) / 2 + half, h, w)
            if y0 >= y1 or x0 >= x1:
                continue
            py, px = ys[y0:y1] - np.float32(ay), xs[:, x0:x1] - np.float32(ax)
            dy, dx = by - ay, bx - ax
            t = np.clip((py * dy + px * dx) * (1.0 / (dy * dy + dx * dx)), 0.0, 1.0)
            ey, ex = py - t * dy, px - t * dx
            mask = ey * ey + ex * ex <= half * half
        else:  # a dot: geom = (cy, cx, r)
            cy, cx, r = geom
            y0, y1, x0, x1 = _box(cy, cx, r, h, w)
            if y0 >= y1 or x0 >= x1:
                continue
            py, px = ys[y0:y1] - np.float32(cy), xs[:, x0:x1] - np.float32(cx)
            mask = py * py + px * px <= r * r
        img[y0:y1, x0:x1][mask] = colour


def _clutter_items(rng: np.random.Generator, h: int, w: int, side: float) -> list:
    """2..6 distractors: thin line segments, dots and small blobs (2-3 overlapping dots), none a class shape."""
    items = []
    for _ in range(int(rng.integers(2, 7))):
        colour = _random_colour(rng)
        kind = int(rng.integers(3))
        cy, cx = rng.random() * h, rng.random() * w
        if kind == 0:
            length = side * (0.08 + 0.17 * rng.random())
            c, s = _rotation(rng)
            half = max(0.5, side * (0.004 + 0.008 * rng.random()))
            items.append(("segment", colour,
                          (cy - s * length / 2, cx - c * length / 2, cy + s * length / 2, cx + c * length / 2, half)))
        elif kind == 1:
            items.append(("dot", colour, (cy, cx, max(0.8, side * (0.01 + 0.02 * rng.random())))))
        else:
            for _ in range(int(rng.integers(2, 4))):
                r = max(1.0, side * (0.015 + 0.025 * rng.random()))
                items.append(("dot", colour, (cy + (rng.random() - 0.5) * 2 * r, cx + (rng.random() - 0.5) * 2 * r, r)))
    return items


def render(index: int, split: str = "train", size: Size = (96, 96), seed: int = 0) -> tuple[np.ndarray, int]:
    """Sample `index` of `split`: (image uint8 [H, W, 3] RGB, label in [0, 10)), with label = index % 10.

    A pure function of (seed, split, index, size); geometry is in fractions of the image so one sample looks
    alike at every size. index and seed must be >= 0.
    """
    h, w = _norm_size(size)
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    rng = np.random.default_rng([int(seed), _split_id(split), int(index)])
    label = int(index) % len(CLASS_NAMES)
    side = float(min(h, w))
    ys, xs = _grid(h, w)

    # Background: linear gradient between two colours, plus low-frequency colour noise, amplitude <= 30.
    bg_a, bg_b = _random_colour(rng), _random_colour(rng)
    gc, gs = _rotation(rng)
    diag = math.sqrt(h * h + w * w)
    grid_n = int(rng.integers(3, 8))
    blotch = ((rng.random((grid_n, grid_n, 3)) * 2.0 - 1.0) * (8.0 + 22.0 * rng.random())).astype(np.float32)
    fine_amp = 3.0 + 9.0 * rng.random()  # final per-pixel mono noise, +- fine_amp

    # Shape: its bounding disc spans 35-80% of the short side and lies fully inside the image; the unstretched
    # shape spans 1/sqrt(_MAX_ASPECT) = 0.91x that (32-73%).
    extent = side * (0.35 + 0.45 * rng.random())
    radius = extent / 2.0
    cy = radius + rng.random() * (h - extent)
    cx = radius + rng.random() * (w - extent)
    rc, rs = _rotation(rng)
    aspect = math.sqrt(1.0 / _MAX_ASPECT + (_MAX_ASPECT - 1.0 / _MAX_ASPECT) * rng.random())

    # Fill colours: c1 and a blend c2 towards a random colour; c1 kept >= 100 and c2 >= 80 (RGB L2) from the
    # background gradient's ends and middle.
    bg_mid = (bg_a + bg_b) / np.float32(2.0)
    for _ in range(32):
        c1 = _random_colour(rng)
        c2 = c1 + np.float32(0.2 + 0.25 * rng.random()) * (_random_colour(rng) - c1)
        if (min(_dist(c1, b) for b in (bg_a, bg_b, bg_mid)) >= 100.0
                and min(_dist(c2, b) for b in (bg_a, bg_b, bg_mid)) >= 80.0):
            break
    else:
        c1 = (np.float32(255.0) - bg_mid).astype(np.float32)
        c2 = c1
    texture = int(rng.integers(4))  # 0 solid, 1 stripes, 2 checker, 3 noise
    tc, ts = _rotation(rng)
    period = side * (0.04 + 0.10 * rng.random())
    phase_a, phase_b = rng.random(), rng.random()

    clutter = _clutter_items(rng, h, w, side)
    in_front = rng.random(len(clutter)) < 0.25

    # --- size-dependent arrays are drawn last ---
    # Background = bilinear upsampling of (gradient + blotches) sampled on the coarse grid; the gradient is
    # linear, so it is reproduced exactly between the nodes. Node k of an n-pixel axis sits at k * n / (g - 1).
    node_y = np.arange(grid_n, dtype=np.float64)[:, None] * (h / (grid_n - 1))
    node_x = np.arange(grid_n, dtype=np.float64)[None, :] * (w / (grid_n - 1))
    g = (node_x - w / 2.0) * (gc / diag) + (node_y - h / 2.0) * (gs / diag) + 0.5  # [g, g], 0..1 inside
    nodes = (bg_a + g[..., None] * (bg_b - bg_a) + blotch).astype(np.float32)  # [g, g, 3]
    ri0, rf = _bilinear_taps(h, grid_n)
    ci0, cf = _bilinear_taps(w, grid_n)
    rows = nodes[ri0] + (nodes[ri0 + 1] - nodes[ri0]) * rf[:, None, None]  # [h, g, 3]
    step = rows[:, 1:] - rows[:, :-1]  # [h, g - 1, 3]
    img = rows[:, ci0] + step[:, ci0] * cf[None, :, None]  # [h, w, 3] float32

    _paint_clutter(img, [c for c, f in zip(clutter, in_front) if not f], ys, xs)

    y0, y1, x0, x1 = _box(cy, cx, radius, h, w)
    dy, dx = ys[y0:y1] - np.float32(cy), xs[:, x0:x1] - np.float32(cx)
    inv_r = math.sqrt(_MAX_ASPECT) / radius  # the stretched shape stays inside the bounding disc
    u = (dx * np.float32(rc * inv_r) + dy * np.float32(rs * inv_r)) * np.float32(1.0 / aspect)
    v = (dy * np.float32(rc * inv_r) - dx * np.float32(rs * inv_r)) * np.float32(aspect)
    mask = _shape_mask(label, u, v)
    if texture == 0:
        fill = c1
    else:
        if texture == 3:
            t = rng.random((y1 - y0, x1 - x0), dtype=np.float32)
        else:
            a = (dx * np.float32(tc) + dy * np.float32(ts)) * np.float32(1.0 / period) + np.float32(phase_a)
            parity = np.floor(a)
            if texture == 2:
                parity = parity + np.floor((dy * np.float32(tc) - dx * np.float32(ts)) * np.float32(1.0 / period)
                                           + np.float32(phase_b))
            t = parity - np.float32(2.0) * np.floor(parity * np.float32(0.5))  # parity mod 2, in {0, 1}
        fill = (c1 + t[..., None] * (c2 - c1))[mask]
    img[y0:y1, x0:x1][mask] = fill

    _paint_clutter(img, [c for c, f in zip(clutter, in_front) if f], ys, xs)

    img += (rng.random((h, w), dtype=np.float32) * np.float32(2.0 * fine_amp) - np.float32(fine_amp))[..., None]
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8), label


def make_split(split: str, count: int, size: Size = (96, 96), seed: int = 0,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Samples 0..count-1 of `split`: images uint8 [N, H, W, 3], labels int64 [N] (balanced: label = i % 10)."""
    h, w = _norm_size(size)
    _split_id(split)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    images = np.empty((count, h, w, 3), dtype=np.uint8)
    labels = np.empty((count,), dtype=np.int64)
    indices = range(count)
    if progress:
        from .progress import progress as bar
        indices = bar(indices, f"rendering {split}", unit="img")
    for i in indices:
        images[i], labels[i] = render(i, split, (h, w), seed)
    return images, labels


# ---------------------------------------------------------------------------------------------------------
# User image folders


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _check_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise UserError(f"{what} {path} is not a directory")


def _walk_images(root: Path) -> list[Path]:
    """Image files under root, recursively, in the torchvision order (sorted directories, sorted names)."""
    found = []
    for dirpath, _, filenames in sorted(os.walk(root, followlinks=True)):
        found.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image(f))
    return found


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise UserError(f"image limit must be at least 1, got {limit}")


def _read_image(path: Path, h: int, w: int) -> np.ndarray:
    """One file as uint8 [h, w, 3] RGB, resized with bilinear filtering."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"cannot read image {path}: {reason}") from None
    return arr


def load_image_folder(path: Union[str, os.PathLike], size: Size = (96, 96),
                      limit: int | None = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """An ImageFolder tree (root/<class>/**/<image>): images uint8 [N, H, W, 3], labels int64 [N], class names.

    Classes are the sorted sub-directory names (hidden ones skipped); label k is class_names[k]. Images are
    listed per class in sorted walk order. With `limit`, at most `limit` images are kept, picked round-robin
    over the classes (so every class is represented while limit >= the number of classes), then returned
    in the same class-major order.
    """
    root = Path(path)
    h, w = _norm_size(size)
    _check_limit(limit)
    _check_dir(root, "image folder")
    with os.scandir(root) as entries:
        classes = tuple(sorted(e.name for e in entries if e.is_dir() and not e.name.startswith(".")))
    if not classes:
        raise UserError(f"image folder {root} has no class sub-directories (expected {root}/<class>/<image>)")
    per_class = [_walk_images(root / c) for c in classes]
    for c, files in zip(classes, per_class):
        if not files:
            raise UserError(f"class directory {root / c} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    selected: list[tuple[int, int]] = []  # (class, position in class)
    if limit is None:
        selected = [(k, i) for k, files in enumerate(per_class) for i in range(len(files))]
    else:
        depth = 0
        while len(selected) < limit and any(depth < len(f) for f in per_class):
            for k, files in enumerate(per_class):
                if depth < len(files) and len(selected) < limit:
                    selected.append((k, depth))
            depth += 1
        selected.sort()
    images = np.empty((len(selected), h, w, 3), dtype=np.uint8)
    labels = np.empty((len(selected),), dtype=np.int64)
    for n, (k, i) in enumerate(selected):
        images[n] = _read_image(per_class[k][i], h, w)
        labels[n] = k
    return images, labels, classes


def load_images(path: Union[str, os.PathLike], size: Size, limit: int | None = None) -> np.ndarray:
    """Every image under a directory, recursively, in sorted walk order (first `limit` only): uint8 [N, H, W, 3]."""
    root = Path(path)
    h, w = _norm_size(size)
    _check_limit(limit)
    _check_dir(root, "image directory")
    files = _walk_images(root)
    if not files:
        raise UserError(f"image directory {root} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    if limit is not None:
        files = files[:limit]
    images = np.empty((len(files), h, w, 3), dtype=np.uint8)
    for n, f in enumerate(files):
        images[n] = _read_image(f, h, w)
    return images
