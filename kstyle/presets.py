"""The transform-net presets, as data (no TensorFlow here: commands check ``--arch`` and
``--image-size`` before they import it).

A preset names a layout (which builder of :mod:`kstyle.transform_net` makes it), that
builder's knobs, and the image-side multiple its nets map to themselves. Adding a preset is
one :func:`register_preset` call below plus its tests (``tests/test_presets.py`` builds every
registered preset and checks its multiple against the graph).
"""

import dataclasses
import types

from kstyle.constants import SIZE_MULTIPLE

# The layouts, each one builder of kstyle.transform_net.
JOHNSON_LAYOUT = "johnson"  # Johnson et al.'s: conv-IN-ReLU down, residual blocks, up (any width)
LIVE_LAYOUT = "live"  # laid out for a frame budget: almost nothing at full resolution
# Each layout's knobs (every preset gives all of them; tests/test_presets.py checks them
# against the builder's parameters) and the image-side multiple its strides set.
LAYOUT_KNOBS = {
    JOHNSON_LAYOUT: ("width", "num_residual_blocks", "separable", "edge_kernel"),
    LIVE_LAYOUT: ("quarter", "eighth", "blocks", "out_kernel", "block_norms"),
}
LAYOUT_MULTIPLES = {JOHNSON_LAYOUT: SIZE_MULTIPLE, LIVE_LAYOUT: 8}  # two stride 2; stride 4, 2
LAYOUTS = tuple(LAYOUT_KNOBS)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A transform-net preset.

    Attributes:
        name: what ``--arch`` and ``build_transform_net(arch=...)`` call it.
        layout: one of :data:`LAYOUTS`, the builder that makes it.
        knobs: that builder's keyword arguments (read-only).
        size_multiple: image sides (pixels) that its nets map to themselves.
    """

    name: str
    layout: str
    knobs: types.MappingProxyType
    size_multiple: int


PRESETS: dict[str, Preset] = {}


def register_preset(name: str, layout: str, size_multiple: int | None = None, **knobs) -> Preset:
    """Adds a preset to :data:`PRESETS` and returns it.

    Args:
        name: the preset's name.
        layout: one of :data:`LAYOUTS`.
        size_multiple: image sides (pixels) its nets map to themselves: a multiple of the
            layout's own (:data:`LAYOUT_MULTIPLES`; None: that one).
        knobs: every knob of the layout (:data:`LAYOUT_KNOBS`), and no other.

    Raises:
        ValueError: the name is taken, the layout unknown, a knob missing or unknown, or a
            multiple that the layout's strides do not divide.
    """
    if name in PRESETS:
        raise ValueError(f"a preset named {name!r} exists")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    expected = set(LAYOUT_KNOBS[layout])
    if set(knobs) != expected:
        missing, unknown = sorted(expected - set(knobs)), sorted(set(knobs) - expected)
        raise ValueError(f"the {layout} layout's knobs: missing {missing}, unknown {unknown}")
    least = LAYOUT_MULTIPLES[layout]
    size_multiple = least if size_multiple is None else size_multiple
    if not isinstance(size_multiple, int) or size_multiple < least or size_multiple % least:
        raise ValueError(f"size_multiple must be a multiple of {least}, got {size_multiple!r}")
    preset = Preset(name, layout, types.MappingProxyType(dict(knobs)), size_multiple)
    PRESETS[name] = preset
    return preset


# johnson: the reference network, 1,679,235 parameters. ``width`` multiplies the hidden channel
# counts (32, 64, 128); ``separable`` makes every 3x3 convolution depthwise-separable;
# ``edge_kernel`` is the first and last convolution's size. docs/presets.md has the parameters
# and FLOPs of each preset, and the measurements that chose live's knobs: its channels at 1/4
# and 1/8 of the input's resolution, residual blocks at 1/8, output kernel (at 1/4, before the
# pixel shuffle) and whether the blocks have instance norms.
_JOHNSON = dict(width=1.0, num_residual_blocks=5, separable=False, edge_kernel=9)
register_preset("johnson", JOHNSON_LAYOUT, **_JOHNSON)
register_preset("slim", JOHNSON_LAYOUT, **{**_JOHNSON, "width": 0.5})
register_preset(
    "tiny", JOHNSON_LAYOUT,
    **{**_JOHNSON, "width": 0.5, "num_residual_blocks": 3, "separable": True, "edge_kernel": 7},
)  # fmt: skip
register_preset(
    "live", LIVE_LAYOUT, quarter=16, eighth=64, blocks=4, out_kernel=3, block_norms=True
)

DEFAULT_ARCH = "johnson"  # the reference's network
LIVE_ARCH = "live"  # the preset laid out for real time, which the web page suggests


def arch_names() -> tuple[str, ...]:
    """The registered presets' names, in registration order (the default first)."""
    return tuple(PRESETS)


def size_multiple_of(arch: str) -> int:
    """The image-side multiple (pixels) that nets of preset ``arch`` map to themselves
    (:data:`kstyle.constants.SIZE_MULTIPLE` for a name that is no preset)."""
    preset = PRESETS.get(arch)
    return SIZE_MULTIPLE if preset is None else preset.size_multiple
