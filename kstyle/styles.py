"""Styles of a network of N styles: the style vector, and a single-style net for one vector.

A net of N styles (:class:`kstyle.norms.ConditionalInstanceNorm`) takes the content and a style
vector w (B, N). :func:`style_vector` reads what a user gives (an index, ``"0:0.5,3:0.5"``, or
N weights) into w; :func:`bake_style` turns the net and w into a plain one-input net whose
instance norms hold γ = wᵀΓ and β = wᵀB, so that everything built for one-style nets (tiling
with exact statistics, the fused graph, video, colour, strength) stylizes with a style or a
blend at the cost of one style. Its pixels equal the two-input net's to float32 rounding (the
affine is applied in another order), not bit for bit.
"""

import re
import weakref

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from kstyle.errors import KstyleError
from kstyle.graph import Graph
from kstyle.style_tables import conditional_norms, style_count, table_of

_PAIR = re.compile(r"^\s*([0-9]+)\s*:\s*([^,]+?)\s*$")


def _weights_of_text(spec: str, count: int) -> np.ndarray:
    """``"2"`` or ``"0:0.5,3:0.5"`` as N weights (not yet checked)."""
    weights = np.zeros(count, np.float64)
    spec = spec.strip()
    if re.fullmatch(r"[0-9]+", spec):
        pairs = [(spec, "1")]
    else:
        pairs = []
        for part in spec.split(","):
            match = _PAIR.match(part)
            if not match:
                raise KstyleError(
                    f"--style {spec!r}: give a style index (e.g. 2) or index:weight pairs "
                    "(e.g. 0:0.5,3:0.5)"
                )
            pairs.append(match.groups())
    for index_text, weight_text in pairs:
        index = int(index_text) if len(index_text) < 10 else count  # a huge one: not there
        if index >= count:
            raise KstyleError(
                f"style {index} does not exist: this network has {count} style(s), 0 to {count - 1}"
            )
        try:
            weights[index] += float(weight_text)
        except ValueError:
            raise KstyleError(f"style weight {weight_text!r} is not a number") from None
    return weights


def style_vector(style, count: int) -> np.ndarray:
    """The style vector (N,) float32 for ``style``, normalized to sum 1.

    Args:
        style: None (style 0), an index, a string (``"2"``, or ``"0:0.5,3:0.5"``: weights
            of the styles named, the others 0), or N non-negative weights.
        count: N, the net's number of styles.

    Raises:
        KstyleError: an index that does not exist, a negative or non-finite weight, weights
            that sum to 0, or a vector of the wrong length; one line each.
    """
    if style is None:
        style = 0
    if isinstance(style, str):
        weights = _weights_of_text(style, count)
    elif np.ndim(style) == 0:
        if isinstance(style, bool) or not isinstance(style, int | np.integer):
            raise KstyleError(f"a style index is a whole number, got {style!r}")
        if style < 0:
            raise KstyleError(f"style index must not be negative, got {style}")
        weights = _weights_of_text(str(int(style)), count)
    else:
        weights = np.asarray(style, np.float64).reshape(-1)
        if weights.size != count:
            raise KstyleError(
                f"a style vector of {weights.size} weight(s) for a network of {count} style(s)"
            )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise KstyleError(f"style weights must be finite and not negative, got {weights}")
    if weights.max() <= 0:
        raise KstyleError("style weights sum to 0: give at least one style a positive weight")
    weights = weights / weights.max()  # first: huge weights must not overflow the sum
    return (weights / weights.sum()).astype(np.float32)


def bake_style(model, style) -> keras.Model:
    """A one-input net that stylizes as ``model`` does with the style vector ``style``.

    Args:
        model: a net of N styles (two inputs: content (B, H, W, 3), style (B, N)).
        style: what :func:`style_vector` takes.

    Returns:
        A ``keras.Model`` (B, H, W, 3) -> (B, H, W, 3) with ``model``'s layers (shared, so
        its weights) but each conditional instance norm made a plain instance norm
        (``GroupNormalization(groups=-1)``, same name and epsilon) holding γ = wᵀΓ, β = wᵀB
        as the tables are now.
    """
    count = style_count(model)
    if count == 1:
        raise KstyleError(f"{model.name!r} is a net of one style: there is nothing to bake")
    return _bake(model, style_vector(style, count))[0]


def _pass(position: int):
    """A layer call that returns its ``position``-th input."""
    return lambda tensors: tensors[position]


def _bake(model, vector):
    """:func:`bake_style` of a checked style vector, and a function that copies the tables'
    current γ and β into the baked net again (its convolutions are ``model``'s own). Neither
    holds ``model`` itself, only its layers."""
    graph = Graph(model)
    content_tensor, style_tensor = graph.inputs
    constant = {style_tensor: keras.ops.convert_to_tensor(vector[None])}
    replace, pairs = {}, []
    for node, multiply, add, scale, offset in conditional_norms(graph, style_tensor):
        plain = layers.GroupNormalization(
            groups=-1, epsilon=node.layer.epsilon, name=node.name, dtype=node.layer.dtype_policy
        )
        plain.build(graph.shapes[node.inputs[0]])
        replace[node.name] = plain
        # the norm's own path through the Multiply and the Add, whichever side it is on
        replace[multiply.name] = _pass(multiply.inputs.index(node.output))
        replace[add.name] = _pass(add.inputs.index(multiply.output))
        tables = [table_of(graph, tensor, node.name) for tensor in (scale, offset)]
        pairs.append((plain, *tables))

    weights = keras.ops.convert_to_tensor(vector[None])

    @tf.function  # one call, not two eager assignments per norm: stylizing calls it each time
    def refresh():
        for plain, scale, offset in pairs:
            plain.gamma.assign(keras.ops.matmul(weights, scale.kernel)[0])
            plain.beta.assign(keras.ops.matmul(weights, offset.kernel)[0])

    refresh()
    content = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name=content_tensor.layer)
    (output,) = graph.evaluate({content_tensor: content, **constant}, graph.outputs, replace)
    return keras.Model(content, output, name=model.name), refresh


_BAKED = weakref.WeakKeyDictionary()  # net of N styles -> {vector bytes: (baked, refresh)}
_BAKED_PER_NET = 8


def styled_net(model, style=None):
    """``model`` ready to stylize with ``style``: itself for a net of one style (``style``
    None or 0), :func:`bake_style` for a net of N styles (``style`` None: style 0). The last
    few baked nets of each model are kept, so that calls per image or frame bake once; each
    call copies the tables' current rows into the one it returns (the weights may have
    changed since).

    Raises:
        KstyleError: a ``style`` that ``model`` does not hold (see :func:`style_vector`).
    """
    count = style_count(model)
    vector = style_vector(style, count)
    if count == 1:
        return model
    baked = _BAKED.setdefault(model, {})
    key = vector.tobytes()
    if key in baked:
        baked[key] = baked.pop(key)  # the most recently used last: the oldest goes first
        baked[key][1]()
    else:
        if len(baked) >= _BAKED_PER_NET:
            baked.pop(next(iter(baked)))
        baked[key] = _bake(model, vector)
    return baked[key][0]
