"""The style tables of a net of N styles (conditional instance norm, :mod:`kstyle.norms`),
found by structure: how many styles a net holds, where each norm's Γ and B tables are, and a
net with more styles made from a trained one (``kstyle train --add-style``)."""

import numpy as np
from keras import layers

from kstyle.errors import KstyleError
from kstyle.graph import Graph


def style_count(model) -> int:
    """How many styles ``model`` holds: the width of its style input, 1 without one."""
    inputs = list(model.inputs)
    return int(inputs[1].shape[-1]) if len(inputs) == 2 else 1


def conditional_norms(graph: Graph, style) -> list:
    """``[(norm node, multiply node, add node, scale tensor, offset tensor)]``: each
    normalization without its own scale and offset whose output is multiplied by a tensor
    computed from the style input alone, then offset by another (a conditional instance norm,
    found by structure)."""
    found = []
    for node in graph.nodes_of(layers.GroupNormalization):
        if node.layer.scale or node.layer.center:
            continue
        multiply = _only_reader(graph, node.output, layers.Multiply)
        add = multiply and _only_reader(graph, multiply.output, layers.Add)
        if add is None:
            raise KstyleError(f"norm {node.name!r} is not a conditional instance norm")
        scale = [t for t in multiply.inputs if t != node.output]
        offset = [t for t in add.inputs if t != multiply.output]
        for tensor in scale + offset:
            needed = {ancestor.output for ancestor in graph.ancestors([tensor], stop=[style])}
            if not needed.isdisjoint(graph.inputs):
                raise KstyleError(f"norm {node.name!r} takes its scale from the image")
        found.append((node, multiply, add, scale[0], offset[0]))
    return found


def _only_reader(graph: Graph, tensor, kind):
    readers = graph.consumers(tensor)
    return readers[0] if len(readers) == 1 and isinstance(readers[0].layer, kind) else None


def style_tables(model) -> dict:
    """``{norm name: (scale Dense, offset Dense)}``: the Γ and B tables of each conditional
    instance norm of a net of N styles, found by structure (kernels (N, C))."""
    graph = Graph(model)
    tables = {}
    for node, _, _, scale, offset in conditional_norms(graph, graph.inputs[1]):
        dense = [table_of(graph, tensor, node.name) for tensor in (scale, offset)]
        tables[node.name] = tuple(dense)
    return tables


def table_of(graph: Graph, tensor, norm: str):
    """The one ``Dense`` layer (no bias, no activation: a table whose rows the style vector
    mixes) that computes ``tensor`` from the style vector."""
    found = [
        node.layer for node in graph.ancestors([tensor]) if isinstance(node.layer, layers.Dense)
    ]
    linear = [
        dense
        for dense in found
        if not dense.use_bias and dense.get_config()["activation"] == "linear"
    ]
    if len(found) != 1 or len(linear) != 1:
        raise KstyleError(f"norm {norm!r}: its scale or offset is not one table of the style")
    return found[0]


def extend_styles(net, base) -> None:
    """Makes ``net`` (a net of N styles) ``base`` (the same preset, with M < N styles, or a net
    of one style) with N - M styles more, ready to learn only those.

    Every weight of ``base`` is copied into the layer of the same name (``net`` is built by
    the same builder, so the names match), a plain instance norm's scale and offset into row
    0 of its tables; each new row starts as the mean of the old rows. Then every layer but the
    style tables is frozen: with only new styles drawn, the old rows' gradients are exactly 0
    and Adam leaves them (and the frozen convolutions) bit for bit as they were.

    Raises:
        KstyleError: ``base`` does not fit ``net`` (another preset, or as many styles).
    """
    old = style_count(base)
    if old >= style_count(net):
        raise KstyleError(f"the base net has {old} styles; the new one must have more")
    tables = style_tables(net)
    learning = [table for pair in tables.values() for table in pair]
    table_rows = _copy_base(net, base, tables)
    for table in learning:
        rows = np.asarray(table_rows[table], np.float32)
        if rows.size != old * table.kernel.shape[1]:
            raise KstyleError(f"the base net's {table.name!r} does not fit the new net")
        rows = rows.reshape(old, -1)
        extra = np.repeat(rows.mean(axis=0, keepdims=True), table.kernel.shape[0] - old, 0)
        table.kernel.assign(np.concatenate([rows, extra]))
    for layer in net.layers:
        layer.trainable = any(layer is table for table in learning)


def _copy_base(net, base, tables) -> dict:
    """Copies ``base``'s weights into ``net``'s layers of the same names but the style
    tables, and returns ``{table: base's rows}`` (a plain norm's γ or β as one row).

    Raises:
        KstyleError: a layer of one that the other lacks or holds in another shape.
    """
    old, by_name = style_count(base), {layer.name: layer for layer in net.layers}
    learning = [table for pair in tables.values() for table in pair]
    rows, filled = {}, set()
    for layer in base.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if old == 1 and layer.name in tables:  # a plain instance norm: (gamma, beta)
            rows.update(zip(tables[layer.name], weights, strict=True))
            continue
        target = by_name.get(layer.name)
        if target is None:
            raise KstyleError(f"the base net's layer {layer.name!r} is not in the new net")
        if any(target is table for table in learning):
            rows[target] = weights[0]
        elif [w.shape for w in target.get_weights()] != [w.shape for w in weights]:
            raise KstyleError(f"the base net's layer {layer.name!r} does not fit the new net")
        else:
            target.set_weights(weights)
            filled.add(target.name)
    for layer in net.layers:
        is_table = any(layer is table for table in learning)
        if layer.weights and (layer not in rows if is_table else layer.name not in filled):
            raise KstyleError(f"the base net has nothing for {layer.name!r}: another preset?")
    return rows
