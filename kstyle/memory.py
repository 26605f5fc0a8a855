"""The memory budget of a network pass: how sizes are read, and what fits.

One forward pass of the transform net on (B, H, W, 3) takes about
``BASE_BYTES + BYTES_PER_PIXEL * B * H * W`` bytes of peak memory (the constants come from
peak-RSS measurements of the compiled float32 pass, with a margin; ``docs/performance.md``
gives the figures and the command). Images whose pass would not fit the budget are tiled.
"""

import re

from kstyle.errors import KstyleError

BYTES_PER_PIXEL = 700
BASE_BYTES = 700 * 2**20  # TensorFlow's runtime and the model
# The default budget of the network passes (docs/performance.md: what it keeps large images to).
DEFAULT_MAX_MEMORY = 5 * 2**29  # 2.5 GiB
AUTO = "auto"


def parse_memory(text) -> int:
    """Parses a memory size such as ``4GB``, ``512MB``, ``1.5G`` or ``1000000`` into bytes.

    Units are binary (1 GB = 2**30 bytes). Raises KstyleError on anything else.
    """
    if isinstance(text, int | float):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", str(text), re.IGNORECASE)
        if not match:
            raise KstyleError(f"cannot read memory size {text!r}; use e.g. 4GB or 512MB")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * 1024 ** " kmgt".index(unit or " "))
    if size <= 0:
        raise KstyleError(f"memory size must be positive, got {text!r}")
    return size


def resolve_max_memory(max_memory=AUTO) -> int | None:
    """The budget in bytes: ``"auto"`` is :data:`DEFAULT_MAX_MEMORY`, None is no limit, and
    anything else is read by :func:`parse_memory`."""
    if max_memory is None:
        return None
    if isinstance(max_memory, str) and max_memory.strip().lower() == AUTO:
        return DEFAULT_MAX_MEMORY
    return parse_memory(max_memory)


def forward_bytes(height: int, width: int, batch: int = 1) -> int:
    """Estimated peak memory in bytes of one plain forward pass on (batch, height, width, 3)."""
    return BASE_BYTES + BYTES_PER_PIXEL * batch * height * width


def pixels_within(max_memory: int | None) -> int:
    """How many pixels one forward pass may take so that it fits ``max_memory`` bytes
    (None: no limit)."""
    if max_memory is None:
        return 2**62
    return max(4096, (max_memory - BASE_BYTES) // BYTES_PER_PIXEL)


def needs_tiling(height: int, width: int, max_memory: int | None) -> bool:
    """Whether a whole-image forward pass on (height, width) would exceed ``max_memory`` bytes."""
    return max_memory is not None and forward_bytes(height, width) > max_memory


def batch_within(height: int, width: int, max_memory: int | None, largest: int = 8) -> int:
    """The largest power of two up to ``largest`` frames of (height, width) whose forward pass
    fits ``max_memory`` (at least 1)."""
    batch = largest
    while max_memory and batch > 1 and forward_bytes(height, width, batch) > max_memory:
        batch //= 2
    return batch
