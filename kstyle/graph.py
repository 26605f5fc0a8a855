"""The structure of a functional Keras model, read from its public config: which layer call
reads which tensor, in topological order. Graph passes (upsampling fusion, exact tiled
statistics, the export rewrites) find what they need here by layer type, connection, kernel
size and stride, never by layer name.

The connections come from ``model.get_config()`` (each layer's ``inbound_nodes``, the format
``.keras`` files store), so a model whose layers are shared with another model (a clone, a
fused copy) is read as its own graph. Layers (and ops called on symbolic tensors) are looked up
by name only to map config entries to objects, which a functional model keeps unique.
"""

import dataclasses
import fractions
import math

import keras
from keras import layers

from kstyle.errors import KstyleError
from kstyle.transform_net import DepthToSpace, ReflectionPadding2D


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One tensor of the graph: output ``index`` of call ``call`` of layer ``layer``."""

    layer: str
    call: int
    index: int


@dataclasses.dataclass
class Node:
    """One call of a layer in the graph.

    ``args`` and ``kwargs`` are the call's arguments with :class:`Tensor` in place of each
    symbolic tensor; ``inputs`` lists those tensors in argument order.
    """

    layer: object
    call: int
    args: list
    kwargs: dict
    inputs: list
    position: int  # in topological order

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def output(self) -> Tensor:
        """The call's first (for kstyle's layers: only) output."""
        return Tensor(self.layer.name, self.call, 0)


def _is_tensor_config(value) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def _to_refs(value, found):
    """``value`` (a call's serialized arguments) with Tensor for each tensor; adds them to
    ``found`` in order."""
    if _is_tensor_config(value):
        name, call, index = value["config"]["keras_history"]
        tensor = Tensor(name, int(call), int(index))
        found.append(tensor)
        return tensor
    if isinstance(value, list | tuple):
        return [_to_refs(item, found) for item in value]
    if isinstance(value, dict):
        return {key: _to_refs(item, found) for key, item in value.items()}
    return value


def _substitute(value, values):
    if isinstance(value, Tensor):
        return values[value]
    if isinstance(value, list):
        return [_substitute(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, values) for key, item in value.items()}
    return value


class Graph:
    """The call graph of a functional ``keras.Model``.

    Attributes:
        model: the model.
        nodes: every layer call (input layers included), in topological order.
        inputs, outputs: the model's input and output tensors.
        shapes: ``{tensor: static shape}`` of every tensor some call reads.
    """

    def __init__(self, model):
        if isinstance(model, keras.Sequential):
            if not model.built or not getattr(model, "inputs", None):
                raise KstyleError(f"Sequential model {model.name!r} has no input shape yet")
            model = keras.Model(model.inputs, model.outputs, name=model.name)  # same layers
        if not isinstance(model, keras.Model) or not getattr(model, "operations", None):
            raise KstyleError(f"{getattr(model, 'name', model)!r} is not a functional model")
        try:
            config = model.get_config()
        except Exception as error:  # a subclassed model has no functional config
            raise KstyleError(
                f"cannot read the structure of model {model.name!r}: {error}".splitlines()[0]
            ) from error
        if "layers" not in config:
            raise KstyleError(f"model {model.name!r} is not a functional model")
        self.model = model
        self.nodes, self.shapes = [], {}
        self._producers, self._consumers = {}, {}
        operations = {operation.name: operation for operation in model.operations}
        for entry in config["layers"]:
            layer = operations[entry["name"]]
            calls = entry.get("inbound_nodes") or [{"args": [], "kwargs": {}}]
            for call, inbound in enumerate(calls):
                found = []
                args = _to_refs(inbound.get("args", []), found)
                kwargs = _to_refs(inbound.get("kwargs", {}), found)
                node = Node(layer, call, args, kwargs, found, len(self.nodes))
                self.nodes.append(node)
                self._producers[node.output] = node
                for tensor in found:
                    self._consumers.setdefault(tensor, []).append(node)
                _record_shapes(inbound, self.shapes)
        self.inputs = [Tensor(*_history(ref)) for ref in _references(config["input_layers"])]
        self.outputs = [Tensor(*_history(ref)) for ref in _references(config["output_layers"])]
        for tensor in self.inputs + self.outputs:
            if tensor.layer not in {node.name for node in self.nodes}:
                raise KstyleError(f"model {model.name!r} has no layer {tensor.layer!r}")

    def producer(self, tensor: Tensor) -> Node:
        """The call that computes ``tensor``."""
        for candidate in (tensor, Tensor(tensor.layer, tensor.call, 0)):
            if candidate in self._producers:
                return self._producers[candidate]
        raise KstyleError(f"no layer call computes {tensor}")

    def consumers(self, tensor: Tensor) -> list:
        """The calls that read ``tensor`` (in topological order)."""
        return list(self._consumers.get(tensor, []))

    def is_output(self, tensor: Tensor) -> bool:
        """Whether ``tensor`` is one of the model's outputs."""
        return tensor in self.outputs

    def channels(self, tensor: Tensor) -> int | None:
        """The last dimension of ``tensor``'s static shape (None where unknown)."""
        shape = self.shapes.get(tensor)
        return None if not shape else shape[-1]

    def calls(self, layer) -> int:
        """How many times the model calls ``layer``."""
        return sum(node.layer is layer for node in self.nodes)

    def nodes_of(self, kind) -> list:
        """The calls of layers that are instances of ``kind`` (a class or tuple of classes)."""
        return [node for node in self.nodes if isinstance(node.layer, kind)]

    def ancestors(self, tensors, stop=()) -> list:
        """The calls needed to compute ``tensors`` from the tensors in ``stop`` (and the
        model's inputs), in topological order."""
        stop, needed, pending = set(stop), set(), list(tensors)
        while pending:
            tensor = pending.pop()
            if tensor in stop:
                continue
            node = self.producer(tensor)
            if node.position in needed:
                continue
            needed.add(node.position)
            pending.extend(node.inputs)
        return [self.nodes[position] for position in sorted(needed)]

    def evaluate(self, values: dict, targets, replace=None):
        """Computes ``targets`` from ``values`` (``{Tensor: array or tensor}``) by calling the
        layers between them; returns a list in ``targets``' order.

        ``replace``: optional ``{layer name: callable}`` to call instead of those layers (for
        example a norm with fixed statistics). Input layers must be given in ``values``.
        """
        known = dict(values)
        replace = replace or {}
        for node in self.ancestors(targets, stop=known):
            if isinstance(node.layer, layers.InputLayer):
                raise KstyleError(f"evaluate needs a value for the input {node.name!r}")
            function = replace.get(node.name, node.layer)
            result = function(*_substitute(node.args, known), **_substitute(node.kwargs, known))
            outputs = result if isinstance(result, list | tuple) else [result]
            for index, output in enumerate(outputs):
                known[Tensor(node.name, node.call, index)] = output
        return [known[tensor] for tensor in targets]


def _references(value):
    """A config's ``input_layers`` / ``output_layers`` as a list of references (a single
    reference is stored bare, several as a list or dict)."""
    if isinstance(value, dict) and not _is_tensor_config(value):
        value = list(value.values())
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [value]
    return list(value)


def _history(reference):
    """A (layer, call, index) triple from a config's input or output reference."""
    if isinstance(reference, dict):  # a nested structure's leaf
        reference = reference["config"]["keras_history"]
    name, call, index = reference
    return name, int(call), int(index)


def _record_shapes(inbound, shapes):
    def visit(value):
        if _is_tensor_config(value):
            config = value["config"]
            shape = config.get("shape")
            if shape is not None:
                shapes[Tensor(*_history(config["keras_history"]))] = tuple(shape)
        elif isinstance(value, list | tuple):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)

    visit(inbound.get("args", []))
    visit(inbound.get("kwargs", {}))


def is_instance_norm(layer, channels: int | None) -> bool:
    """Whether ``layer`` normalises each channel of each image over height and width: a
    ``GroupNormalization`` with one group per channel on the last axis."""
    return (
        isinstance(layer, layers.GroupNormalization)
        and layer.axis in (-1, 3)
        and (layer.groups == -1 or (channels is not None and layer.groups == channels))
    )


def instance_norms(graph: Graph) -> list:
    """The instance-norm calls of ``graph`` in topological order.

    Raises:
        KstyleError: a ``GroupNormalization`` with fewer groups than channels (its statistics
            mix channels, which no pass of kstyle handles), naming the layer.
    """
    found = []
    for node in graph.nodes_of(layers.GroupNormalization):
        channels = graph.channels(node.inputs[0])
        if not is_instance_norm(node.layer, channels):
            raise KstyleError(
                f"layer {node.name!r} is a GroupNormalization with {node.layer.groups} groups "
                f"over {channels} channels; kstyle needs instance norm (groups=-1)"
            )
        found.append(node)
    return found


def spatial_change(layer) -> tuple[fractions.Fraction, bool]:
    """``(factor, known)``: how ``layer`` scales height and width (1/2 for a stride-2 conv, 2
    for a x2 upsampling) and whether kstyle knows the layer's spatial behaviour at all."""
    if isinstance(layer, layers.InputLayer):
        return fractions.Fraction(1), True
    if isinstance(layer, layers.Conv2DTranspose):
        return fractions.Fraction(int(layer.strides[0])), True
    if isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D | layers.SeparableConv2D):
        return fractions.Fraction(1, int(layer.strides[0])), True
    if isinstance(layer, layers.UpSampling2D):
        return fractions.Fraction(int(layer.size[0])), True
    if isinstance(layer, layers.MaxPooling2D | layers.AveragePooling2D):
        return fractions.Fraction(1, int(layer.strides[0])), True
    scale = getattr(layer, "spatial_scale", None)  # kstyle's own layers declare theirs
    if scale is not None:
        return fractions.Fraction(scale), True
    return fractions.Fraction(1), False


def tensor_scales(graph: Graph) -> dict:
    """``{tensor: size relative to the model's first input}`` (a Fraction), for every call's
    output; None for the tensors that do not depend on the first input (a style vector and
    what is computed from it alone, which broadcast over height and width).

    Raises:
        KstyleError: inputs of one layer at different scales.
    """
    scales = {tensor: None for tensor in graph.inputs}
    scales[graph.inputs[0]] = fractions.Fraction(1)
    for node in graph.nodes:
        if isinstance(node.layer, layers.InputLayer):
            continue
        inputs = {scales[tensor] for tensor in node.inputs} - {None}
        if len(inputs) > 1:
            raise KstyleError(f"layer {node.name!r} reads tensors of different sizes")
        factor, _ = spatial_change(node.layer)
        scales[node.output] = inputs.pop() * factor if inputs else None
    return scales


def size_multiple(model) -> int:
    """The smallest height/width multiple for which every tensor of ``model`` has a whole size
    (4 for the seed net: two stride-2 convolutions; 8 for ``live``)."""
    return graph_size_multiple(Graph(model))


def smallest_side(model) -> int:
    """The smallest height/width ``model`` runs on once padded: its size multiple, twice that
    where it has reflect padding (mirroring a row needs two rows, also at the coarsest
    scale: 16 px for ``live`` with ``padding="reflect"``)."""
    reflects = any(isinstance(layer, ReflectionPadding2D) for layer in model.layers)
    return size_multiple(model) * (2 if reflects else 1)


def graph_size_multiple(graph: Graph) -> int:
    """:func:`size_multiple` of the model that ``graph`` reads."""
    scales = tensor_scales(graph).values()
    return math.lcm(*(scale.denominator for scale in scales if scale is not None))


def output_tanh(graph: Graph):
    """The call of a tanh ``Activation`` that the model's single output is a rescaling of (the
    output itself, or reached back from it through ``Rescaling`` layers and a pixel shuffle),
    each tensor on the way read by the next call only; None where the model has no such output.

    The default transform net's output is ``tanh`` then two ``Rescaling`` layers
    (:func:`kstyle.transform_net.pixels_output`), ``live``'s those then a
    :class:`kstyle.transform_net.DepthToSpace`: this finds the tanh by structure.
    """
    if len(graph.outputs) != 1:
        return None
    tensor = graph.outputs[0]
    while True:
        node = graph.producer(tensor)
        if graph.calls(node.layer) != 1 or len(node.inputs) != 1:
            return None
        if isinstance(node.layer, layers.Activation):
            return node if node.layer.activation is keras.activations.tanh else None
        if not isinstance(node.layer, layers.Rescaling | DepthToSpace):
            return None
        tensor = node.inputs[0]
        if len(graph.consumers(tensor)) != 1 or graph.is_output(tensor):
            return None
