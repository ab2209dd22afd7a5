"""The HTML report: one self-contained file with every section, figures embedded."""

from __future__ import annotations

import base64
import json
import re
import shutil

import pytest
from conftest import copy_and_run_cli, needs_real_data, run_cli

from fmnist.reporting.report import REPORT_FILE
from fmnist.reporting.report_page import SECTIONS

pytestmark = needs_real_data
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(smoke_run, tmp_path_factory):
    """`fmnist report` on a private copy of the smoke run: (run folder, HTML text)."""
    run, out = copy_and_run_cli(smoke_run, tmp_path_factory, "report")
    assert out.strip() == str(run / REPORT_FILE)
    return run, (run / REPORT_FILE).read_text(encoding="utf-8")


def test_report_is_one_self_contained_page(report):
    run, page = report
    assert page.startswith("<!DOCTYPE html>")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page, sid
    # Nothing to fetch: no scripts, stylesheets or remote resources.
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "@media print" in page
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) >= 6
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    for name in ("training_curves", "confusion_matrix", "confused_pairs", "misclassified", "reliability"):
        assert (run / f"{name}.png").read_bytes().startswith(PNG_MAGIC)


def test_report_content(report):
    run, page = report
    metrics = json.loads((run / "test_metrics.json").read_text())  # written by the same evaluation
    assert f"{metrics['test_accuracy'] * 100:.2f}%" in page
    assert f"{metrics['ece']:.4f}" in page.split('<section id="calibration">')[1]
    first = page.split('<section id="first-test-image">')[1].split("</section>")[0]
    for word in ("predicted", "actual", "Ankle boot", "match", "confidence"):
        assert word in first
    for name in ("T-shirt/top", "Ankle boot"):
        assert name in page.split('<section id="per-class">')[1].split("</section>")[0]
    model = page.split('<section id="model">')[1].split("</section>")[0]
    assert "Conv2d" in model and "225,034" in model  # the seed CNN's parameter count
    config = json.loads((run / "config.json").read_text())
    assert f"&quot;batch_size&quot;: {config['batch_size']}" in page


def test_report_of_damaged_run_fails_cleanly(smoke_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    (run / "model.safetensors").write_bytes(b"not a model")
    code, out, err = run_cli(monkeypatch, capsys, "report", run)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert not (run / REPORT_FILE).exists()


def test_report_shows_ece_before_and_after_with_both_reliability_diagrams(report):
    from fmnist.runtime.modelfile import read_model_info

    run, page = report
    t = read_model_info(run).temperature
    assert t is not None  # training fitted one on the validation split
    assert f"T = {t:.3f}" in page and "raw softmax" in page
    assert (run / "reliability.png").is_file() and (run / "reliability_uncalibrated.png").is_file()
