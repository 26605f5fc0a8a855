"""What machine this is, read without TensorFlow: the CPU's model and instruction-set flags,
and the versions of the libraries whose kernels decide how fast kstyle runs.

:mod:`kstyle.tune_store` keys its measured choices on :func:`machine_record`, so that a choice
measured on one CPU, or with other library versions, is never applied to another.
"""

import importlib.metadata
import os

# x86 CPU features for which TensorFlow's Linux builds switch oneDNN on by default
# (DefaultOneDnnPolicy in tensorflow/core/util/util.cc), as /proc/cpuinfo names them.
TENSORFLOW_ONEDNN_FEATURES = (
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
# CPU features that change which kernels (and which oneDNN choice) kstyle gets.
CPU_FEATURES = ("avx2", "fma", "avx512f", *TENSORFLOW_ONEDNN_FEATURES)
# Distributions whose versions change the kernels: a new version is a new machine.
KERNEL_LIBRARIES = ("tensorflow", "keras", "ai-edge-litert", "numpy")
# Environment variables that change the kernels or threads TensorFlow and oneDNN use.
KERNEL_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
CPUINFO = "/proc/cpuinfo"


def cpuinfo_fields(path=CPUINFO) -> dict:
    """The first processor's ``name: value`` fields of ``/proc/cpuinfo`` (Linux); empty where
    there is none."""
    fields = {}
    try:
        with open(path) as file:
            for line in file:
                if not line.strip():
                    if fields:
                        break
                    continue
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags(path=CPUINFO) -> set[str]:
    """The instruction-set flags of this CPU (Linux), or an empty set where unknown."""
    return set(cpuinfo_fields(path).get("flags", "").split())


def cpu_model(path=CPUINFO) -> str:
    """This CPU as ``<model name> (<vendor> family F model M stepping S)``; ``unknown CPU``
    where ``/proc/cpuinfo`` says nothing."""
    fields = cpuinfo_fields(path)
    ids = [fields.get(name) for name in ("vendor_id", "cpu family", "model", "stepping")]
    if not any(ids) and "model name" not in fields:
        return "unknown CPU"
    vendor, family, model, stepping = (value or "?" for value in ids)
    described = f"{vendor} family {family} model {model} stepping {stepping}"
    return f"{fields.get('model name', 'unnamed CPU')} ({described})"


def tensorflow_onednn_default(flags: set[str]) -> bool:
    """Whether TensorFlow switches oneDNN on by itself on a Linux x86 CPU with ``flags`` (when
    ``TF_ENABLE_ONEDNN_OPTS`` is unset): only for CPUs with neural-network instructions."""
    return any(feature in flags for feature in TENSORFLOW_ONEDNN_FEATURES)


def preferred_onednn(task: str, flags: set[str]) -> bool | None:
    """Whether ``task`` (``train`` or ``stylize``) runs faster with oneDNN on a CPU with
    ``flags``; None where kstyle has no measurement (not an x86 CPU with AVX2).

    The rule comes from ``bench/bench.py`` measurements on one AMD EPYC (docs/performance.md):
    training is faster with oneDNN whatever the vector width; batch-1 stylizing is faster with
    oneDNN's AVX-512 kernels but slower with its AVX2 ones. TensorFlow's own default
    (:func:`tensorflow_onednn_default`) gets training on AVX2 and stylizing on plain AVX-512
    wrong. ``kstyle tune`` replaces the rule with a measurement on the user's machine.
    """
    if "avx2" not in flags:
        return None
    if task == "train":
        return True
    return "avx512f" in flags


def version_of(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_record(path=CPUINFO) -> dict:
    """What a measured speed depends on: the CPU model, its :data:`CPU_FEATURES`, the logical
    core count, the versions of :data:`KERNEL_LIBRARIES` and kstyle, and the
    :data:`KERNEL_VARIABLES` that are set. Two processes with equal records run the same
    kernels."""
    import kstyle

    flags = cpu_flags(path)
    return {
        "cpu": cpu_model(path),
        "features": [feature for feature in CPU_FEATURES if feature in flags],
        "cores": os.cpu_count(),
        "libraries": {name: version_of(name) for name in KERNEL_LIBRARIES}
        | {"kstyle": kstyle.__version__},
        "environment": {name: os.environ[name] for name in KERNEL_VARIABLES if name in os.environ},
    }
