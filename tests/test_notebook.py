"""notebooks/fashion_mnist.ipynb: the committed file is a finished, error-free run of all six
sections (fast, read as JSON), and the notebook still runs top to bottom on the real data: with
small budgets in `make test` (slow tier), with the committed ones in `make test-accuracy`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import needs_real_data

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "fashion_mnist.ipynb"
SECTIONS = [
    "What is Fashion-MNIST?",
    "Why normalize the pixels?",
    "What are the network's layers?",
    "What is an epoch?",
    "What does the model say about test image 0?",
    "How can the accuracy be improved?",
]


def load() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def text(cell: dict) -> str:
    return "".join(cell["source"])


def output_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append("".join(out.get("text", "")))
        parts.append("".join(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def test_the_six_questions_are_sections_in_order():
    headings = [
        line[3:].strip()
        for c in load()["cells"]
        if c["cell_type"] == "markdown"
        for line in text(c).splitlines()
        if line.startswith("## ")
    ]
    assert headings == [f"{i}. {s}" for i, s in enumerate(SECTIONS, 1)]


def test_the_first_code_cell_installs_fmnist_only_when_it_is_missing():
    first = text(code_cells(load())[0])
    assert 'find_spec("fmnist") is None' in first
    assert "pip" in first and "install" in first and "FMNIST_PIP_SOURCE" in first


def test_the_committed_file_holds_one_complete_error_free_run():
    cells = code_cells(load())
    counts = [c["execution_count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), "not executed top to bottom in one kernel: run `make notebook`"
    for c in cells:
        for out in c["outputs"]:
            assert out["output_type"] != "error", f"a stored error in cell {c['execution_count']}: {out.get('ename')}"
            if out["output_type"] == "stream":
                assert out["name"] != "stderr" or "Traceback" not in "".join(out["text"])
    # Every cell but the imports shows something.
    silent = [c["execution_count"] for c in cells if not c["outputs"]]
    assert len(silent) <= 1, f"cells without output: {silent}"


def test_the_stored_outputs_answer_the_questions():
    nb = load()
    cells = code_cells(nb)
    everything = "\n".join(output_text(c) for c in cells)
    assert "checksums verified: True" in everything
    assert "225,034 parameters" in everything
    assert re.search(r"epoch 3/3 .* val loss", everything)
    assert re.search(
        r"test image 0: predicted \d \(.+\), actual 9 \(Ankle boot\), match: \w+, confidence \d+\.\d\d%", everything
    )
    assert "the whole notebook ran in" in everything
    pictures = sum("image/png" in out.get("data", {}) for c in cells for out in c["outputs"])
    assert pictures >= 5  # sample grid, feature maps, curves, confusion matrix, probability bars
    # The run it was committed with is named: the machine, and the date, which the introduction repeats.
    assert re.search(r"fmnist \S+ on x86_64 .*threads, PyTorch", everything)
    ran_on = re.search(r"; (\d{4}-\d{2}-\d{2})\n", everything)
    assert ran_on, "the setup cell prints the date of the run"
    assert ran_on[1] in text(nb["cells"][0]), f"the introduction should name the date of the stored run, {ran_on[1]}"


def test_links_to_the_docs_point_at_files_that_exist():
    root = NOTEBOOK.parent
    links = re.findall(
        r"\]\((\.\./[^)#]+)", "\n".join(text(c) for c in load()["cells"] if c["cell_type"] == "markdown")
    )
    assert {"../docs/ablation.md", "../docs/tuning.md", "../docs/transfer.md"} <= set(links)
    for link in links:
        assert (root / link).exists(), link


# `make test` runs every cell with these budgets instead of the committed ones: the notebook's
# own code, with one epoch of 10,000 images for the notebook's recipe (the suite's real-data
# accuracy floor) and a token run of `quick`. Each replacement must match exactly once, so an edit of the
# notebook that moves these lines fails here instead of quietly running the full budgets.
SMALL_BUDGETS = [
    ("EPOCHS, SUBSET = 3, 10_000", "EPOCHS, SUBSET = 1, 10_000"),
    ("QUICK_EPOCHS, QUICK_SUBSET = 2, 6_000", "QUICK_EPOCHS, QUICK_SUBSET = 1, 1_000"),
    ("--trials 3 --epochs-per-trial 1", "--trials 2 --epochs-per-trial 1"),
]


def execute(work: Path, replacements: list[tuple[str, str]] = ()) -> dict:
    """Copy the notebook into ``work`` and execute every cell with nbclient in a fresh kernel
    (this interpreter's: jupyter_client's rule for the "python3" kernel the notebook names).
    Raises CellExecutionError, naming the cell, on the first error. The conftest's
    FMNIST_NO_DOWNLOAD=1 reaches the kernel (it inherits this environment), so nothing is
    downloaded; run folders go under ``work`` (the kernel's working directory), not into the
    repository. Returns the executed notebook."""
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebook]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebook]'")
    work.mkdir()
    nb = nbformat.reads(NOTEBOOK.read_text(encoding="utf-8"), as_version=4)
    for old, new in replacements:
        hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert len(hits) == 1 and hits[0].source.count(old) == 1, f"notebook line moved or changed: {old!r}"
        hits[0].source = hits[0].source.replace(old, new)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": work}})
    client.execute()
    return nb


@needs_real_data
@pytest.mark.slow
def test_every_cell_runs_on_the_real_data_with_small_budgets(tmp_path):
    """The CI check that the notebook runs: every cell, in order, in a fresh kernel, on the
    real data (about a minute on 2 cores). One epoch of 10,000 images of the notebook's network
    must pass 78% test accuracy (81.1% measured; chance is 10%) and get test image 0, an ankle
    boot, right with a real probability."""
    nb = execute(tmp_path / "notebooks", SMALL_BUDGETS)
    outputs = "\n".join(output_text(c) for c in code_cells(nb))
    assert "checksums verified: True" in outputs
    assert "225,034 parameters" in outputs
    assert "epoch 1/1" in outputs
    accuracy = re.search(r"test accuracy (\d+\.\d\d)% \(", outputs)
    assert accuracy and float(accuracy[1]) >= 78.0, accuracy
    first = re.search(
        r"test image 0: predicted 9 \(Ankle boot\), actual 9 \(Ankle boot\), match: yes, confidence (\S+)%", outputs
    )
    assert first and 50.0 < float(first[1]) <= 100.0, outputs[-3000:]
    assert "the whole notebook ran in" in outputs


@needs_real_data
@pytest.mark.slow
@pytest.mark.accuracy
def test_the_notebook_runs_top_to_bottom_on_the_real_data(tmp_path):
    """The committed budgets, every cell (`make test-accuracy`; about 3 minutes on 2 cores):
    the notebook recipe for 3 epochs of 10,000 images, `quick` for 2 epochs of 6,000, three
    tuning trials."""
    nb = execute(tmp_path / "notebooks")
    outputs = "\n".join(output_text(c) for c in code_cells(nb))
    assert "225,034 parameters" in outputs
    assert "actual 9 (Ankle boot)" in outputs
