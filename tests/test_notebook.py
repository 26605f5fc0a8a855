"""examples/quickstart.ipynb runs headless from a fresh folder and its printed numbers hold;
the committed notebook carries no outputs."""

import io
import json
import math
import os
import re

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "quickstart.ipynb")
CELL_TIMEOUT_S = 300
TRAIN_STEPS = 30  # the notebook's TrainConfig(steps=...)
EXPORT_SIZE = 256  # the notebook's SIZE
LITERT_PSNR_BAR_DB = 40.0


def _stdout(notebook) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
    )


def _png_outputs(notebook) -> list[bytes]:
    import base64

    return [
        base64.b64decode(output["data"]["image/png"])
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run by nbclient in an empty folder, offline: the python3 kernel of this
    interpreter (kstyle as the tests import it) and an empty KERAS_HOME (no cached VGG
    weights)."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the dev extra")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is in the dev extra")
    pytest.importorskip("ipykernel", reason="ipykernel is in the dev extra")
    pytest.importorskip("ai_edge_litert", reason="the notebook's export cells need [export]")
    folder = tmp_path_factory.mktemp("quickstart")
    keras_home = tmp_path_factory.mktemp("keras_home")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as patch:  # the kernel inherits this environment
        patch.setenv("KERAS_HOME", str(keras_home))
        patch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        client = nbclient.NotebookClient(
            notebook,
            timeout=CELL_TIMEOUT_S,
            kernel_name="python3",
            resources={"metadata": {"path": str(folder)}},
        )
        client.execute()
    return notebook, folder


def test_notebook_runs_and_litert_matches_keras(executed):
    notebook, folder = executed
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None
            assert not [o for o in cell.outputs if o.output_type == "error"]
    text = _stdout(notebook)
    # honest about the loss network: no cached weights here, so a random one and a warning
    assert "random loss network, so the result is a smoke test, not a style" in text

    match = re.search(r"max \|difference\| (\d+) levels \(of 255\), PSNR (\S+) dB", text)
    assert match, text[-2000:]
    from kstyle.export.verify import MAX_ABS_DIFF_BAR

    assert int(match.group(1)) <= MAX_ABS_DIFF_BAR
    assert float(match.group(2)) >= LITERT_PSNR_BAR_DB

    # the printed losses are the run directory's history
    run_dir = folder / "runs" / "quickstart" / "run"
    from kstyle.callbacks import read_history

    rows = read_history(str(run_dir / "history.csv"), TRAIN_STEPS)
    assert [row["step"] for row in rows] == list(range(1, TRAIN_STEPS + 1))
    assert all(math.isfinite(row["loss"]) and row["loss"] > 0 for row in rows)
    trained = re.search(r"trained (\d+) steps; last step's losses: total (\S+),", text)
    assert trained and int(trained.group(1)) == TRAIN_STEPS
    assert float(trained.group(2)) == pytest.approx(rows[-1]["loss"], rel=1e-3)
    curve = re.search(r"history\.csv: (\d+) steps, total loss (\S+) -> (\S+)", text)
    assert curve and int(curve.group(1)) == TRAIN_STEPS
    assert float(curve.group(3)) == pytest.approx(rows[-1]["loss"], rel=1e-6)

    # the exported file is the fixed-size fp32 TFLite model its sidecar describes
    exported = folder / "runs" / "quickstart" / "export" / "model.tflite"
    sidecar = json.loads((exported.parent / "model.tflite.json").read_text())
    assert sidecar["input"]["shape"] == [1, EXPORT_SIZE, EXPORT_SIZE, 3]
    assert sidecar["quantization"] == "none"

    # two figures inline (images and loss curve), each a real picture, not a blank canvas
    from PIL import Image

    pngs = _png_outputs(notebook)
    assert len(pngs) == 2
    for png in pngs:
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 10

    # nothing written outside runs/quickstart
    assert sorted(os.listdir(folder)) == ["runs"]
    assert sorted(os.listdir(folder / "runs")) == ["quickstart"]


def test_committed_notebook_has_no_outputs():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the dev extra")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == []
        assert cell.execution_count is None
        assert "pip install" not in cell.source  # installing is shown, never run
    markdown = "".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    # kstyle is on no package index: the cell installs the clone the notebook sits in
    # (Jupyter's working folder is the notebook's), which must be an installable project
    target = re.search(r'%pip install "([^"\[]+)\[export\]"', markdown).group(1)
    assert target == ".."
    project = os.path.join(os.path.dirname(NOTEBOOK), target, "pyproject.toml")
    with open(project, encoding="utf-8") as file:
        metadata = file.read()
    assert re.search(r'^name = "kstyle"$', metadata, flags=re.MULTILINE)
    assert re.search(r"^export = \[", metadata, flags=re.MULTILINE)  # the extra it names
