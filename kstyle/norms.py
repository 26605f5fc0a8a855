"""The normalizations a transform net can be built with (its builders' ``normalizer``).

* :data:`instance_norm`: the reference's instance norm, one learned scale γ and offset β per
  channel (a built-in ``GroupNormalization`` with one group per channel, epsilon 1e-5).
* :class:`ConditionalInstanceNorm`: Dumoulin, Shlens & Kudlur's conditional instance norm
  (ICLR 2017) for N styles in one network. Each norm keeps an N x C table of scales Γ and one
  of offsets B; a style vector w (B, N) (non-negative weights that sum to 1; one-hot for one
  style) selects or mixes their rows: γ = wᵀΓ, β = wᵀB, and the output is
  ``γ · (x − mean) / sqrt(var + ε) + β`` per image and channel, mean and var over H and W.

Both are made of built-in Keras layers only, so a net's ``.keras`` file opens in plain Keras.
A normalizer is called as ``normalizer(x, name)`` on a (B, H, W, C) tensor and returns the same
shape; ``inputs`` are the model inputs it adds to the net (the style vector for a conditional
norm), which a builder appends to the content input.
"""

import keras
from keras import layers

from kstyle.constants import STYLE_INPUT

INSTANCE_NORM_EPSILON = 1e-5  # the reference (MATLAB) default; Keras's own default is 1e-3


class InstanceNorm:
    """The reference instance norm (see the module); adds no model input."""

    inputs = ()

    def __call__(self, x, name):
        """(B, H, W, C) -> the same shape, through a ``GroupNormalization`` named ``name``."""
        return layers.GroupNormalization(groups=-1, epsilon=INSTANCE_NORM_EPSILON, name=name)(x)


instance_norm = InstanceNorm()


class ConditionalInstanceNorm:
    """Conditional instance norm for ``num_styles`` styles (see the module).

    Each call ``(x, name)`` adds a ``GroupNormalization`` named ``name`` without scale and
    offset, two ``Dense`` layers without bias on the style input (``{name}_scale``, starting
    at 1: the Γ table; ``{name}_offset``, starting at 0: the B table; each kernel (N, C)),
    their reshapes to (B, 1, 1, C), a ``Multiply`` and an ``Add``: ``2 N C`` parameters, as
    N instance norms have. ``inputs`` holds the style input, (B, N) float32, named ``style``.
    """

    def __init__(self, num_styles: int):
        if int(num_styles) < 1:
            raise ValueError(f"num_styles must be at least 1, got {num_styles}")
        self.num_styles = int(num_styles)
        self.style = keras.Input(shape=(self.num_styles,), name=STYLE_INPUT)
        self.inputs = (self.style,)

    def __call__(self, x, name):
        """(B, H, W, C) -> the same shape, normalized and scaled by the style's rows."""
        channels = x.shape[-1]
        normalized = layers.GroupNormalization(
            groups=-1, epsilon=INSTANCE_NORM_EPSILON, center=False, scale=False, name=name
        )(x)
        scale = self._row(channels, "ones", f"{name}_scale")
        offset = self._row(channels, "zeros", f"{name}_offset")
        scaled = layers.Multiply(name=f"{name}_times_scale")([normalized, scale])
        return layers.Add(name=f"{name}_plus_offset")([scaled, offset])

    def _row(self, channels, initializer, name):
        """wᵀ (table) as (B, 1, 1, channels): a ``Dense`` on the style vector, reshaped."""
        row = layers.Dense(
            channels, use_bias=False, kernel_initializer=initializer, name=name, dtype="float32"
        )(self.style)
        return layers.Reshape((1, 1, channels), name=f"{name}_reshape")(row)


def normalizer_for(num_styles: int):
    """The normalizer of a net with ``num_styles`` styles: the reference instance norm for
    one (the seed net, unchanged), a new :class:`ConditionalInstanceNorm` for more."""
    return instance_norm if num_styles == 1 else ConditionalInstanceNorm(num_styles)
