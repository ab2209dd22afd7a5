"""Transfer learning: --init-from an fmnist run or a torchvision-layout ResNet-18 file,
--freeze keeps weights bit-identical, --head-lr, and one-line refusals."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from conftest import run_cli, synthetic_config
from safetensors.torch import save_file

from fmnist.core.errors import FmnistError
from fmnist.models import build_model
from fmnist.runtime.modelfile import load_model
from fmnist.training.optim import param_groups
from fmnist.training.trainer import train
from fmnist.training.transfer import frozen_prefixes, head_name, initialise


def torchvision_resnet18_state(classes: int = 1000) -> dict[str, torch.Tensor]:
    """Random weights under exactly the keys and shapes torchvision's resnet18 publishes."""
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        state[f"{prefix}.weight"] = torch.rand(c, generator=g) + 0.5
        state[f"{prefix}.bias"] = torch.randn(c, generator=g) * 0.1
        state[f"{prefix}.running_mean"] = torch.randn(c, generator=g) * 0.1
        state[f"{prefix}.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)

    state["conv1.weight"] = torch.randn(64, 3, 7, 7, generator=g) * 0.05
    bn("bn1", 64)
    c_in = 64
    for i, w in enumerate((64, 128, 256, 512), 1):
        for b in range(2):
            p = f"layer{i}.{b}"
            state[f"{p}.conv1.weight"] = torch.randn(w, c_in if b == 0 else w, 3, 3, generator=g) * 0.05
            bn(f"{p}.bn1", w)
            state[f"{p}.conv2.weight"] = torch.randn(w, w, 3, 3, generator=g) * 0.05
            bn(f"{p}.bn2", w)
            if b == 0 and i > 1:
                state[f"{p}.downsample.0.weight"] = torch.randn(w, c_in, 1, 1, generator=g) * 0.05
                bn(f"{p}.downsample.1", w)
        c_in = w
    state["fc.weight"] = torch.randn(classes, 512, generator=g) * 0.01
    state["fc.bias"] = torch.zeros(classes)
    return state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_torchvision_layout_resnet18_loads_with_grey_stem_and_new_head(tmp_path, suffix):
    state = torchvision_resnet18_state()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # DDP-saved layout
    model = build_model("resnet18")
    notes = initialise(model, "resnet18", {}, path, reset_head=False)
    ours = model.state_dict()
    torch.testing.assert_close(ours["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True), rtol=0, atol=0)
    for k in ("layer3.0.downsample.0.weight", "layer4.1.bn2.running_var", "bn1.bias"):
        assert torch.equal(ours[k], state[k]), k
    assert ours["fc.weight"].shape == (10, 512)
    assert any("grey channel" in n for n in notes) and any("replaced the head (fc)" in n for n in notes)


def test_a_checkpoint_that_needs_unpickling_or_does_not_fit_is_refused(tmp_path):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"conv1.weight": Exploit()}, protocol=2))
    with pytest.raises(FmnistError, match="refused on purpose"):
        initialise(build_model("resnet18"), "resnet18", {}, evil, False)
    half = {k: v for k, v in torchvision_resnet18_state().items() if not k.startswith("layer4")}
    save_file(half, str(tmp_path / "half.safetensors"))
    with pytest.raises(FmnistError, match="does not fit the resnet18 model.*missing"):
        initialise(build_model("resnet18"), "resnet18", {}, tmp_path / "half.safetensors", False)


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_init_from_a_run_with_a_frozen_stem_keeps_it_bit_identical(synthetic_run, synthetic_dir, tmp_path):
    source, _ = load_model(synthetic_run)
    with pytest.warns(UserWarning, match="replaced the head"):
        run = train(
            synthetic_config(
                synthetic_dir, tmp_path / "ft", epochs=1, init_from=str(synthetic_run), freeze="stem", reset_head=True
            )
        )
    before, after = source.state_dict(), load_model(run.out_dir)[0].state_dict()
    stem = frozen_prefixes(source, "stem")[0]
    assert torch.equal(before[f"{stem}.weight"], after[f"{stem}.weight"])
    assert not torch.equal(before["4.weight"], after["4.weight"])  # the rest trained on


def test_freezing_the_body_is_a_linear_probe_even_for_batch_norm(synthetic_dir, tmp_path):
    args = {"widths": [8, 16], "convs": 1}
    first = train(synthetic_config(synthetic_dir, tmp_path / "a", model="cnn", model_args=args, epochs=1))
    probe = train(
        synthetic_config(
            synthetic_dir,
            tmp_path / "b",
            model="cnn",
            model_args=args,
            epochs=1,
            init_from=str(first.out_dir),
            freeze="body",
            head_lr=0.01,
        )
    )
    a, b = load_model(first.out_dir)[0].state_dict(), load_model(probe.out_dir)[0].state_dict()
    head = head_name(build_model("cnn", **args))
    for k in a:
        if k.startswith(head + "."):
            assert not torch.equal(a[k], b[k]), k
        else:
            assert torch.equal(a[k], b[k]), k  # weights and BN statistics alike


def test_head_lr_gets_its_own_group_and_frozen_weights_none():
    m = build_model("cnn", widths=[8, 16], convs=1)
    for p in m[1].parameters():
        p.requires_grad_(False)
    groups = param_groups(m, 5e-4, decay_all=False, head_lr=0.5)
    head = dict(m.named_modules())[head_name(m)]
    assert [g["lr"] for g in groups if "lr" in g] == [0.5, 0.5]
    assert sum(len(g["params"]) for g in groups if "lr" in g) == len(list(head.parameters()))
    assert all(p.requires_grad for g in groups for p in g["params"])


def test_mistakes_are_one_error_line(synthetic_run, synthetic_dir, tmp_path, monkeypatch, capsys):
    base = ["train", "--data-dir", synthetic_dir, "--no-verify", "--epochs", "1", "--val-size", "200"]
    base += ["--out", tmp_path / "x"]
    for args, needle in [
        (["--model", "mlp", "--init-from", synthetic_run], "a seed"),
        (["--init-from", tmp_path / "nope"], "no such file"),
        (["--freeze", "layer9"], "names no part of this model"),
        (["--model", "mlp", "--freeze", "2,4"], "would freeze the head"),
        (["--head-lr", "-1"], "--head-lr"),
    ]:
        code, _, err = run_cli(monkeypatch, capsys, *base, *args)
        lines = [x for x in err.strip().splitlines() if not x.startswith("warning: ")]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (tmp_path / "x").exists()


def test_the_transfer_study_runs_and_writes_its_table(synthetic_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    args = ["transfer-study", "--out", out, "--sizes", "5,20", "--seeds", "2", "--pretrain-epochs", "1"]
    code, text, err = run_cli(monkeypatch, capsys, *args, "--steps", "4", "--data-dir", synthetic_dir, "--no-verify")
    assert code in (0, None), err
    result = json.loads((out / "transfer.json").read_text())
    assert [c["per_class"] for c in result["table"]] == [5, 20] and len(result["rows"]) == 2 * 2 * 2
    assert all(0 <= r["accuracy"] <= 1 for r in result["rows"]) and "| 20 |" in (out / "transfer.md").read_text()
    code, _, err = run_cli(monkeypatch, capsys, *args, "--sizes", "5000", "--data-dir", synthetic_dir, "--no-verify")
    assert code == 2 and err.startswith("error: --sizes: at most")
