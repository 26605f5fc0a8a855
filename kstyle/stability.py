"""Temporal stability of a style network: synthetic clips under a known motion, and how much a
network amplifies the change from one frame to the next.

A clip (:func:`synthetic_clip`) is T frames of one photo under a known motion: an integer-pixel
pan, a slow zoom, a small rotation, or a static scene with fresh Gaussian sensor noise in every
frame. Frame t shows the photo through the affine map T_t from frame pixels to photo pixels,
sampled bilinearly; the map from frame t+1's pixels to frame t's is ``T_t⁻¹ T_{t+1}``, known
exactly.

The temporal error of frames y_0 … y_{T−1} (:func:`temporal_error`), in uint8 levels:

* each y_t is warped into frame t+1's coordinates (bilinear, through the known map);
* the squared difference from y_{t+1} is averaged over the channels and the valid pixels: those
  at least ``margin`` pixels inside frame t+1 whose source lies at least as far inside frame t
  (a network's padding makes its outputs near an edge depend on where the edge is);
* the clip's MSE is the mean of those T − 1 figures; its dB figure is 10·log10(255² / MSE).

:func:`stability` reports it for a network's outputs and for the input frames themselves; the
ratio ``output MSE / input MSE`` is how much the network amplifies change (1: no more than the
input). A pan's input figure is 0 (its warp is exact), so a pan is read by the outputs' figure
alone. :func:`moving_average` is the usual remedy to compare with: an exponential moving average
of the outputs.
"""

import dataclasses
import math

import numpy as np

from kstyle.constants import STABILITY_NOISE_SIGMA

MOTIONS = ("pan", "zoom", "rotate", "noise")
PAN_PIXELS = (2, 1)  # (x, y) pixels per frame: whole pixels, so the pan's warp is exact
ZOOM_PER_FRAME = 1.01  # the view narrows by 1 % per frame
ROTATION_PER_FRAME = 0.5  # degrees per frame, about the frame's centre
NOISE_SIGMA = STABILITY_NOISE_SIGMA  # levels: the static scene's fresh noise per frame
DEFAULT_MARGIN = 8  # pixels left out at each edge of the valid region


@dataclasses.dataclass
class Clip:
    """A synthetic clip: ``frames`` (T, H, W, 3) uint8, and per pair of frames the 3 x 3
    affine ``steps[t]`` that maps a pixel (x, y, 1) of frame t+1 to its place in frame t."""

    motion: str
    frames: np.ndarray
    steps: list


def _affine(scale=1.0, degrees=0.0, shift=(0.0, 0.0)) -> np.ndarray:
    """The 3 x 3 map p -> R(degrees) p / scale + shift (pixels, x then y)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    return np.array([[cos, -sin, shift[0]], [sin, cos, shift[1]], [0.0, 0.0, 1.0]])


def _frame_map(motion: str, t: int, photo_size, size) -> np.ndarray:
    """T_t: frame t's pixels -> the photo's pixels (its centres on each other at t = 0)."""
    (photo_h, photo_w), (height, width) = photo_size, size
    centre = _affine(shift=((photo_w - 1) / 2, (photo_h - 1) / 2))
    to_centre = _affine(shift=(-(width - 1) / 2, -(height - 1) / 2))
    if motion == "pan":
        motion_map = _affine(shift=(t * PAN_PIXELS[0], t * PAN_PIXELS[1]))
    elif motion == "zoom":
        motion_map = _affine(scale=ZOOM_PER_FRAME**t)
    elif motion == "rotate":
        motion_map = _affine(degrees=ROTATION_PER_FRAME * t)
    else:
        motion_map = np.eye(3)
    return centre @ motion_map @ to_centre


def _places(matrix: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel (x, y) of a (H, W) ``size`` grid lands through ``matrix`` (3 x 3):
    two (H, W) float64 arrays, x and y."""
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    places = matrix @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    return places[0].reshape(height, width), places[1].reshape(height, width)


def _within(x, y, shape, margin=0.0) -> np.ndarray:
    """Whether each place (x, y) lies inside an image of ``shape`` (rows, cols, ...), at least
    ``margin`` pixels from its edges."""
    rows, cols = shape[:2]
    return (x >= margin) & (x <= cols - 1 - margin) & (y >= margin) & (y <= rows - 1 - margin)


def sample(image: np.ndarray, matrix: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (h, w, C) seen through ``matrix`` (3 x 3: output pixel (x, y, 1) -> its place
    in ``image``), bilinearly, as a float32 (H, W, C) array of ``size`` (H, W), and where each
    output pixel's place lies inside ``image`` (a (H, W) bool mask; outside: edge values)."""
    x, y = _places(matrix, size)
    rows, cols = image.shape[:2]
    inside = _within(x, y, image.shape)
    x, y = np.clip(x, 0, cols - 1), np.clip(y, 0, rows - 1)
    x0 = np.minimum(np.floor(x).astype(int), cols - 2)
    y0 = np.minimum(np.floor(y).astype(int), rows - 2)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    source = image.astype(np.float32)
    top = source[y0, x0] * (1 - fx) + source[y0, x0 + 1] * fx
    bottom = source[y0 + 1, x0] * (1 - fx) + source[y0 + 1, x0 + 1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32), inside


def synthetic_clip(photo: np.ndarray, motion: str, frames: int = 8, size=(128, 160), seed=0):
    """A :class:`Clip` of ``frames`` frames of ``size`` (H, W) from ``photo`` (h, w, 3) uint8
    under ``motion`` (one of :data:`MOTIONS`); the photo must hold every frame's view (it is
    checked). ``seed`` draws the noise of a ``noise`` clip (σ = :data:`NOISE_SIGMA` levels).

    Raises:
        ValueError: an unknown motion, fewer than 2 frames, or a photo too small.
    """
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; use one of {MOTIONS}")
    if frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {frames}")
    maps = [_frame_map(motion, t, photo.shape[:2], size) for t in range(frames)]
    views = []
    for matrix in maps:
        view, inside = sample(photo, matrix, size)
        if not inside.all():
            raise ValueError(f"the photo ({photo.shape[1]}x{photo.shape[0]}) is too small for "
                             f"{frames} frames of {motion} at {size[1]}x{size[0]}")  # fmt: skip
        views.append(view)
    if motion == "noise":
        rng = np.random.default_rng(seed)
        views = [view + rng.normal(0.0, NOISE_SIGMA, view.shape) for view in views]
    pixels = np.clip(np.round(np.stack(views)), 0, 255).astype(np.uint8)
    steps = [np.linalg.inv(maps[t]) @ maps[t + 1] for t in range(frames - 1)]
    return Clip(motion, pixels, steps)


def temporal_error(frames: np.ndarray, clip: Clip, margin: int = DEFAULT_MARGIN) -> dict:
    """The temporal error (see the module) of ``frames`` (T, H, W, C), uint8 or float in
    levels, under ``clip``'s motion: ``{"mse": levels², "db": 10·log10(255² / mse)}`` (an MSE
    of 0 gives inf dB).

    Raises:
        ValueError: frames that do not match the clip's count, or no valid pixel left.
    """
    if len(frames) != len(clip.frames):
        raise ValueError(f"{len(frames)} frames for a clip of {len(clip.frames)}")
    size = frames.shape[1:3]
    errors = []
    for t, step in enumerate(clip.steps):
        warped, _ = sample(frames[t], step, size)
        valid = _within(*_places(step, size), frames.shape[1:], margin)  # in frame t
        valid &= _within(*_places(np.eye(3), size), frames.shape[1:], margin)  # and in t+1
        if not valid.any():
            raise ValueError(f"no pixel of frame {t + 1} lies {margin} px inside frame {t}")
        difference = warped - np.asarray(frames[t + 1], np.float32)
        errors.append(float(np.mean(np.square(difference[valid]))))
    mse = float(np.mean(errors))
    return {"mse": mse, "db": math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)}


def moving_average(frames: np.ndarray, keep: float) -> np.ndarray:
    """Output smoothing, the usual remedy for flicker: y'_0 = y_0, y'_t = keep · y'_{t−1} +
    (1 − keep) · y_t (float32 levels; ``keep`` in [0, 1), 0: no smoothing). It lags moving
    content: the ghost trails its users see."""
    if not 0 <= keep < 1:
        raise ValueError(f"keep must be in [0, 1), got {keep}")
    smoothed = [np.asarray(frames[0], np.float32)]
    for frame in frames[1:]:
        smoothed.append(keep * smoothed[-1] + (1 - keep) * np.asarray(frame, np.float32))
    return np.stack(smoothed)


def stability(stylize, clip: Clip, margin: int = DEFAULT_MARGIN) -> dict:
    """How much ``stylize`` (a function from a (H, W, 3) uint8 frame to its stylized (H, W, 3)
    uint8 picture, frame by frame) amplifies ``clip``'s change: the temporal errors of the
    input frames and of the outputs (:func:`temporal_error`), and ``ratio`` = output MSE /
    input MSE (None where the input's is 0: a pan's exact warp), with ``outputs``, the
    stylized frames."""
    outputs = np.stack([stylize(frame) for frame in clip.frames])
    source, result = (
        temporal_error(clip.frames, clip, margin),
        temporal_error(outputs, clip, margin),
    )
    ratio = None if source["mse"] == 0 else result["mse"] / source["mse"]
    return {"input": source, "output": result, "ratio": ratio, "outputs": outputs}
