"""The command line: answers for users, and one-line errors with exit code 2."""

import gzip
import json

import pytest
from conftest import needs_real_data, run_cli, write_dataset


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    # A --no-verify warning may come first; the error itself is one line.
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_data(capsys, monkeypatch, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "data", "info", "--data-dir", tmp_path)
    assert_one_line_error(code, err, "lacks", "--data-dir")


def test_truncated_gz(capsys, monkeypatch, tmp_path):
    d = write_dataset(tmp_path / "d")
    blob = (d / "train-images-idx3-ubyte.gz").read_bytes()
    (d / "train-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    code, _, err = run_cli(monkeypatch, capsys, "data", "info", "--data-dir", d)
    assert_one_line_error(code, err, "truncated or damaged", "fetch it again")


def test_wrong_magic(capsys, monkeypatch, tmp_path):
    d = write_dataset(tmp_path / "d")
    raw = bytearray(gzip.decompress((d / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[1] = 0x99
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    code, _, err = run_cli(monkeypatch, capsys, "data", "info", "--data-dir", d, "--no-verify")
    assert_one_line_error(code, err, "not an IDX file")


def test_checksum_mismatch(capsys, monkeypatch, tmp_path):
    d = write_dataset(tmp_path / "d")
    code, _, err = run_cli(monkeypatch, capsys, "data", "info", "--data-dir", d)
    assert_one_line_error(code, err, "SHA-256", "not Fashion-MNIST")


def test_counts_differ(capsys, monkeypatch, tmp_path):
    from fmnist.data.idx import encode_idx

    d = write_dataset(tmp_path / "d")
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(__import__("numpy").zeros(5, "uint8"))))
    code, _, err = run_cli(monkeypatch, capsys, "train", "--data-dir", d, "--no-verify", "--out", tmp_path / "r")
    assert_one_line_error(code, err, "400 images but 5 labels")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag,value", [("--epochs", 0), ("--batch-size", 0), ("--epochs", -3)])
def test_non_positive_epochs_or_batch(capsys, monkeypatch, tmp_path, flag, value):
    code, _, err = run_cli(monkeypatch, capsys, "train", flag, value, "--out", tmp_path / "r")
    assert_one_line_error(code, err, flag)
    assert not (tmp_path / "r").exists()


def test_usage_errors_are_one_line_too(capsys, monkeypatch):
    code, _, err = run_cli(monkeypatch, capsys, "train", "--epochs", "many")
    assert_one_line_error(code, err, "--epochs")
    code, _, err = run_cli(monkeypatch, capsys, "train", "--no-such-flag")
    assert_one_line_error(code, err, "--no-such-flag")


def test_not_a_model_file(capsys, monkeypatch, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"hello")
    code, _, err = run_cli(monkeypatch, capsys, "predict", tmp_path)
    assert_one_line_error(code, err, "damaged or not a safetensors model file")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", tmp_path / "nothing-here")
    assert_one_line_error(code, err, "no such model file")


def test_unknown_preset_and_model(capsys, monkeypatch):
    code, _, err = run_cli(monkeypatch, capsys, "train", "--preset", "fastest-ever")
    assert_one_line_error(code, err, "unknown preset")
    code, _, err = run_cli(monkeypatch, capsys, "model", "summary", "nope")
    assert_one_line_error(code, err, "no such model file")


def test_model_summary_prints_the_keras_table(capsys, monkeypatch):
    code, out, _ = run_cli(monkeypatch, capsys, "model", "summary", "seed")
    assert code == 0
    for word in ("Conv2D", "MaxPooling2D", "Flatten", "Dense", "Softmax", "225,034"):
        assert word in out


@needs_real_data
def test_index_out_of_range(capsys, monkeypatch, smoke_run):
    code, _, err = run_cli(monkeypatch, capsys, "predict", smoke_run, "--index", 10000)
    assert_one_line_error(code, err, "--index 10000 is out of range", "0..9999")


@needs_real_data
def test_existing_run_is_refused(capsys, monkeypatch, smoke_run):
    code, _, err = run_cli(monkeypatch, capsys, "train", "--out", smoke_run, "--epochs", 1, "--subset", 128)
    assert_one_line_error(code, err, "already holds a run", "--overwrite")


@needs_real_data
def test_predict_json_fields(capsys, monkeypatch, smoke_run):
    code, out, _ = run_cli(monkeypatch, capsys, "predict", smoke_run, "--index", 0, "--json")
    assert code == 0
    d = json.loads(out)
    assert set(d) >= {"index", "predicted", "predicted_name", "actual", "actual_name", "match", "confidence", "top"}
    assert d["index"] == 0 and d["actual"] == 9 and d["actual_name"] == "Ankle boot"
    assert 0 < d["confidence"] <= 1 and len(d["top"]) == 3
    assert d["top"][0]["label"] == d["predicted"] and d["match"] == (d["predicted"] == 9)
    assert sum(t["probability"] for t in d["top"]) <= 1 + 1e-9


@needs_real_data
def test_predict_text_answers_the_notebook_question(capsys, monkeypatch, smoke_run):
    code, out, _ = run_cli(monkeypatch, capsys, "predict", smoke_run, "-i", 0, "-i", 1)
    assert code == 0
    assert "test image 0: predicted" in out and "actual 9 (Ankle boot)" in out and "confidence" in out
    assert "test image 1:" in out


@needs_real_data
def test_evaluate_writes_metrics_and_matrix(capsys, monkeypatch, smoke_run):
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", smoke_run)
    assert code == 0 and "test accuracy" in out and "confusion matrix" in out
    m = json.loads((smoke_run / "test_metrics.json").read_text())
    assert m["test_images"] == 10000 and len(m["per_class"]) == 10
    assert sum(map(sum, m["confusion_matrix"])) == 10000
    assert (smoke_run / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


@needs_real_data
def test_data_info_and_show(capsys, monkeypatch, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "data", "info")
    assert code == 0 and "verified" in out and "0.2860" in out and "0.3530" in out and "Ankle boot" in out
    code, out, _ = run_cli(monkeypatch, capsys, "data", "show", "--out", tmp_path / "g.png")
    assert code == 0 and (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
