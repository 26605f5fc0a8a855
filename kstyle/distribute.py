"""Where and how training runs: ``tf.distribute`` strategies, mixed precision, worker roles.

kstyle uses TensorFlow's own distribution engine. ``make_strategy`` turns ``--strategy`` into a
strategy; the trainer is built inside its scope and scales each replica's loss (see
``kstyle.trainer``). Multi-worker runs read the cluster from ``TF_CONFIG``.
"""

import contextlib
import json
import os

from kstyle.errors import KstyleError, cause_of

STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
MIXED_PRECISION = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
JIT_COMPILE = {"auto": "auto", "on": True, "off": False}


def cluster_spec() -> dict:
    """``TF_CONFIG`` as a dict (empty when unset).

    Raises:
        KstyleError: ``TF_CONFIG`` is set but is not JSON.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise KstyleError(f"TF_CONFIG is not valid JSON: {error}") from error


def several_tasks() -> bool:
    """Whether ``TF_CONFIG`` lists more than one task (a multi-worker cluster)."""
    return sum(len(addresses) for addresses in cluster_spec().get("cluster", {}).values()) > 1


def worker_role() -> tuple[str, int]:
    """``(task type, task index)`` of this process in ``TF_CONFIG``; ``("chief", 0)`` alone."""
    task = cluster_spec().get("task", {})
    return task.get("type", "chief"), int(task.get("index", 0))


def is_chief() -> bool:
    """Whether this process writes the run's files: the chief, or worker 0 without a chief."""
    spec = cluster_spec()
    task_type, index = worker_role()
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and "chief" not in spec.get("cluster", {})


def _tpu_strategy():
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as error:  # no TPU here, or it cannot be reached
        raise KstyleError(f"--strategy tpu: no TPU found ({cause_of(error)})") from error
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(name: str = "auto"):
    """The ``tf.distribute.Strategy`` for ``--strategy name``.

    ``auto``: multi-worker when ``TF_CONFIG`` lists more than one task, mirrored when this
    machine has more than one GPU, else the default (single-device) strategy. ``mirrored``
    uses every local GPU (or the CPU); ``multiworker`` needs ``TF_CONFIG``; ``tpu`` needs a TPU.
    Create the strategy before any other TensorFlow work: multi-worker collectives must be
    configured at program start.

    Raises:
        KstyleError: an unknown name, a missing ``TF_CONFIG``, or no TPU.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise KstyleError(f"unknown --strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    spec = cluster_spec()
    if name == "auto":
        if several_tasks():
            name = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if not spec.get("cluster"):
            raise KstyleError(
                "--strategy multiworker needs TF_CONFIG with the cluster and this task "
                "(see docs/training.md, several machines)"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy()


def in_multi_worker_mode(strategy) -> bool:
    """Whether ``strategy`` spans several worker processes (collectives between them): a
    ``MultiWorkerMirroredStrategy`` whose cluster has more than one chief or worker task."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs) > 1


def agree_across_workers(strategy, value: int, how: str) -> int:
    """``value`` combined over every worker: ``min``, ``all`` (both the minimum), or ``any``
    (the maximum). Alone, ``value`` itself. Every worker must call this at the same point.

    Decisions that change what a worker runs (resume step, finished, stop) go through this,
    so that no worker waits forever in a collective the others never reach.
    """
    if not in_multi_worker_mode(strategy):
        return int(value)
    import tensorflow as tf

    local = strategy.run(lambda: tf.constant([int(value)], tf.int64))
    values = strategy.gather(local, axis=0)
    return int(tf.reduce_max(values) if how == "any" else tf.reduce_min(values))


def shared_seed() -> int:
    """A data seed that every worker of a ``TF_CONFIG`` cluster derives alike."""
    import zlib

    cluster = json.dumps(cluster_spec().get("cluster", {}), sort_keys=True)
    return zlib.crc32(cluster.encode()) % 2**31


def strategy_name(strategy) -> str:
    """A short name of a strategy for logs, e.g. ``MirroredStrategy (2 replica(s))``."""
    import tensorflow as tf

    name = "default strategy"
    for kind, label in (
        (tf.distribute.TPUStrategy, "TPUStrategy"),
        (tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
        (tf.distribute.MirroredStrategy, "MirroredStrategy"),
    ):
        if isinstance(strategy, kind):
            name = label
            break
    return f"{name} ({strategy.num_replicas_in_sync} replica(s))"


@contextlib.contextmanager
def dtype_policy(mixed_precision: str = "off"):
    """Builds layers inside this block with ``--mixed-precision``'s Keras dtype policy.

    ``off``: float32. ``float16`` / ``bfloat16``: ``mixed_float16`` / ``mixed_bfloat16``, i.e.
    float32 variables with float16 / bfloat16 computation. The global policy is restored after.
    """
    import keras

    if mixed_precision not in MIXED_PRECISION:
        raise KstyleError(
            f"unknown --mixed-precision {mixed_precision!r}; use one of "
            f"{', '.join(MIXED_PRECISION)}"
        )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_PRECISION[mixed_precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_copy(model):
    """``model`` itself if it computes in float32, else a float32 clone with its weights.

    A mixed-precision run saves this copy, so ``model.keras`` runs in float32 everywhere.
    """
    import keras

    policy = getattr(model.dtype_policy, "name", "float32")
    if policy == "float32" and all(
        getattr(layer.dtype_policy, "name", "float32") == "float32" for layer in model.layers
    ):
        return model

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    with dtype_policy("off"):
        copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
