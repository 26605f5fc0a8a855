"""The package as a whole: a quick, lazy namespace, and imports that only go down the layers."""

import ast
import os
import subprocess
import sys

import pytest
from conftest import ROOT

PACKAGE = os.path.join(ROOT, "kstyle")
BASE = {"errors", "constants", "files", "images", "image_headers", "memory", "progress", "demo"}
BASE |= {"internals", "extras", "quiet", "coco", "checks", "web_runtime", "lock", "smoke"}
BASE |= {"web_site"}
BASE |= {"schedule", "presets"}
BASE |= {"pipeline", "video_io", "history", "stability", "teacher_files", "teacher_runtimes"}
BASE |= {"machine", "tune_store"}
TRAINING = {"data", "transform_net", "loss_net", "losses", "trainer", "callbacks", "distribute"}
TRAINING |= {"config", "distill_config", "stopping", "run_dir", "run", "distill", "tasks"}
TRAINING |= {"norms", "graph", "style_tables", "multi_style", "add_style_config", "teacher_feed"}
TRAINING |= {"tuning"}
INFERENCE = {"styles", "forward", "flops", "staged", "tiling", "inference", "video"}
INFERENCE |= {"stylize_files", "sheet"}
INFERENCE |= {"export", "stylize_paths", "tune_worker", "blocked_conv"}
INFERENCE |= {f"export.{name}" for name in ("calibration", "int8", "serving", "verify", "web")}
INFERENCE |= {"export.writer"}


def _imports():
    """{module: kstyle modules it imports (top level or inside functions)}, names relative
    to the package, submodules of ``cli`` folded into ``cli``; those of ``export`` keep their
    own names (``export.serving``), ``export`` being the package's ``__init__``."""

    def short(name):
        parts = name.split(".")[1:]
        return ".".join(parts[:2]) if parts[:1] == ["export"] else parts[0] if parts else ""

    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")
            module = short(f"kstyle.{relative.removesuffix('.__init__')}")
            targets = found.setdefault(module, set())
            with open(path) as file:
                tree = ast.parse(file.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names_ = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names_ = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                for imported in names_:
                    if imported.startswith("kstyle.") and short(imported) not in ("", module):
                        targets.add(short(imported))
    return found


def test_import_kstyle_is_quick_and_names_load_on_use():
    script = (
        "import sys, kstyle\n"
        "assert 'tensorflow' not in sys.modules, 'import kstyle imported TensorFlow'\n"
        "assert callable(kstyle.stylize) and kstyle.stylize.__module__ == 'kstyle.stylize_files'\n"
        "import kstyle.stylize_files as module\n"
        "assert module.stylize is kstyle.stylize and kstyle.stylize is not module\n"
        "missing = [name for name in kstyle.__all__ if not hasattr(kstyle, name)]\n"
        "assert not missing, missing\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_imports_only_go_down_the_layers():
    imports = _imports()
    assert TRAINING | BASE | INFERENCE <= set(imports), set(imports)
    unplaced = set(imports) - TRAINING - BASE - INFERENCE - {"__init__", "__main__", "cli"}
    assert not unplaced, f"modules in no layer (add them to this test's sets): {unplaced}"
    for module in BASE:
        assert imports[module] <= BASE, (module, imports[module] - BASE)
    for module in TRAINING:
        upward = imports[module] & INFERENCE
        assert not upward, f"training module {module} imports inference modules {upward}"
    for module in INFERENCE | TRAINING | BASE:
        assert "cli" not in imports[module], f"{module} imports the CLI"


def test_no_import_circles():
    imports = _imports()
    imports.pop("__init__", None)

    def reaches(start, goal, seen):
        for nxt in imports.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = [module for module in imports if reaches(module, module, {module})]
    assert not circles, f"modules on an import circle: {sorted(circles)}"


@pytest.mark.skipif(
    not os.environ.get("KSTYLE_TEST_INSTALLED"), reason="CI's check of the installed wheel"
)
def test_the_tests_run_against_the_installed_wheel():
    """In CI the tests must import kstyle from the installed wheel, not the checkout, and so
    must the scripts they run."""
    import kstyle

    assert not os.path.abspath(kstyle.__file__).startswith(PACKAGE), kstyle.__file__
    result = subprocess.run(
        [sys.executable, "-c", "import kstyle; print(kstyle.__file__)"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip(), result.stderr[-2000:]
    assert not result.stdout.strip().startswith(PACKAGE), result.stdout
