"""The preset registry (kstyle.presets) and the builders' ``normalizer`` parameter."""

import inspect

import keras
import numpy as np
import pytest
from keras.layers import GroupNormalization

from kstyle.config import TrainConfig
from kstyle.errors import KstyleError
from kstyle.graph import size_multiple
from kstyle.presets import (
    DEFAULT_ARCH,
    JOHNSON_LAYOUT,
    LAYOUT_KNOBS,
    LAYOUTS,
    LIVE_ARCH,
    LIVE_LAYOUT,
    PRESETS,
    arch_names,
    register_preset,
    size_multiple_of,
)
from kstyle.transform_net import BUILDERS, build_transform_net, instance_norm

NORMS = {"johnson": 3 + 5 * 2 + 2, "tiny": 3 + 3 * 2 + 2, "live": 3 + 4 * 2}  # counted by hand


def test_the_registry_names_every_preset_the_default_first():
    assert arch_names() == ("johnson", "slim", "tiny", "live")
    assert DEFAULT_ARCH == arch_names()[0] == "johnson" and LIVE_ARCH in PRESETS
    assert inspect.signature(build_transform_net).parameters["arch"].default == DEFAULT_ARCH
    arch_field = TrainConfig.__dataclass_fields__["arch"]
    assert tuple(arch_field.metadata["choices"]) == arch_names()
    assert arch_field.default == DEFAULT_ARCH


@pytest.mark.parametrize("arch", arch_names())
def test_every_preset_maps_its_own_multiple_to_itself(arch):
    """The multiple the checks use before building (``--image-size``) is the graph's."""
    assert size_multiple(build_transform_net(arch)) == size_multiple_of(arch)
    assert size_multiple_of("no such preset") == 4


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layouts_knobs_are_its_builders_parameters(layout):
    """What the registry requires of a preset is what the builder takes: every parameter
    without a default, and no name the builder does not know."""
    parameters = inspect.signature(BUILDERS[layout]).parameters
    required = {name for name, p in parameters.items() if p.default is inspect.Parameter.empty}
    assert required <= set(LAYOUT_KNOBS[layout]) <= set(parameters)
    assert not {"padding", "name", "normalizer"} & set(LAYOUT_KNOBS[layout])


@pytest.fixture
def registered():
    """Registers presets for one test and removes them after it."""
    names = []

    def register(name, *args, **knobs):
        preset = register_preset(name, *args, **knobs)
        names.append(name)  # only once registered: a refused name may be a built-in preset's
        return preset

    yield register
    for name in names:
        PRESETS.pop(name, None)


def test_a_registered_preset_is_built_and_checked_by_its_multiple(registered):
    preset = registered("w8", JOHNSON_LAYOUT, 4, width=0.25, num_residual_blocks=1,
                        separable=False, edge_kernel=3)  # fmt: skip
    net = build_transform_net("w8")
    # by hand: conv3 3->8, conv3 s2 8->16, conv3 s2 16->32, a block of two 32->32 convs,
    # up 32->16, up 16->8, conv3 8->3; every conv's bias, and 2 parameters per norm channel
    convs = [(3, 8), (8, 16), (16, 32), (32, 32), (32, 32), (32, 16), (16, 8), (8, 3)]
    norms = 8 + 16 + 32 + 32 + 32 + 16 + 8
    assert net.count_params() == sum(9 * a * b + b for a, b in convs) + 2 * norms
    assert preset.knobs["width"] == 0.25 and size_multiple(net) == 4
    TrainConfig(style="s.jpg", arch="w8", image_size=36).validate()
    with pytest.raises(KstyleError, match="multiple of 4 for --arch w8"):
        TrainConfig(style="s.jpg", arch="w8", image_size=34).validate()


def test_the_registry_refuses_a_taken_name_an_unknown_layout_and_a_bad_multiple(registered):
    with pytest.raises(ValueError, match="a preset named 'tiny' exists"):
        registered("tiny", JOHNSON_LAYOUT, 4)
    with pytest.raises(ValueError, match="layout must be one of"):
        registered("odd", "unet", 4)
    knobs = dict(PRESETS["live"].knobs)
    with pytest.raises(ValueError, match="size_multiple must be a multiple of 8, got 4"):
        registered("odd", LIVE_LAYOUT, 4, **knobs)  # its strides need 8: sizes would break
    with pytest.raises(ValueError, match="size_multiple must be a multiple of 8, got 8.5"):
        registered("odd", LIVE_LAYOUT, 8.5, **knobs)
    with pytest.raises(ValueError, match=r"missing \['block_norms'\], unknown \['width'\]"):
        wrong = {name: value for name, value in knobs.items() if name != "block_norms"}
        registered("odd", LIVE_LAYOUT, **wrong, width=1)
    assert "odd" not in PRESETS
    assert registered("odd", LIVE_LAYOUT, 16, **knobs).size_multiple == 16
    with pytest.raises(TypeError):
        PRESETS["tiny"].knobs["width"] = 2.0  # read-only: the presets stay as registered


def test_the_image_size_must_be_a_multiple_of_the_presets():
    TrainConfig(style="s.jpg", arch="live", image_size=40).validate()
    with pytest.raises(KstyleError, match="multiple of 8 for --arch live"):
        TrainConfig(style="s.jpg", arch="live", image_size=36).validate()
    with pytest.raises(KstyleError, match="--arch must be one of johnson, slim, tiny, live"):
        TrainConfig(style="s.jpg", arch="w8").validate()


@pytest.mark.parametrize("arch", ["johnson", "tiny", "live"])
def test_the_normalizer_is_called_where_the_instance_norms_are(arch):
    """Every normalized tensor goes through ``normalizer``, under the default's layer name
    (what a per-style norm looks its rows up by) and with the default's channel count."""
    calls = []

    def recording(x, name):
        calls.append((name, x.shape[-1]))
        return keras.layers.Identity(name=name)(x)

    net = build_transform_net(arch, normalizer=recording)
    reference = build_transform_net(arch)
    norms = [layer for layer in reference.layers if isinstance(layer, GroupNormalization)]
    assert calls == [(layer.name, layer.gamma.shape[0]) for layer in norms]
    assert len(calls) == NORMS[arch]
    assert not any(isinstance(layer, GroupNormalization) for layer in net.layers)
    assert net.count_params() == reference.count_params() - 2 * sum(c for _, c in calls)


def test_the_default_normalizer_is_the_reference_instance_norm():
    keras.utils.set_random_seed(3)
    default = build_transform_net("tiny")
    keras.utils.set_random_seed(3)
    explicit = build_transform_net("tiny", normalizer=instance_norm)
    for a, b in zip(default.get_weights(), explicit.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    norm = default.get_layer("down1_norm")
    assert isinstance(norm, GroupNormalization)
    assert norm.groups == norm.gamma.shape[0] == 16  # one group per channel: instance norm
    assert norm.epsilon == 1e-5  # the reference's, not Keras's 1e-3
