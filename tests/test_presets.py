"""Presets and the ablation's steps are valid configurations."""

from fmnist.models import build_model
from fmnist.studies.ablate import STEPS
from fmnist.training.config import TrainConfig
from fmnist.training.presets import PRESETS, preset_config


def test_presets_are_valid_configs_and_flags_override_them():
    for name in PRESETS:
        cfg = preset_config(name)
        cfg.validate()
        build_model(cfg.model, **cfg.model_args)
        assert cfg.preset == name
    cfg = preset_config("quick", epochs=1, lr=None)
    assert cfg.epochs == 1 and cfg.lr == PRESETS["quick"]["lr"] and cfg.preset == "quick"


def test_model_args_merge_and_a_new_model_starts_from_its_defaults():
    cfg = preset_config("quick", model_args={"stem": 32})
    assert cfg.model_args == {**PRESETS["quick"]["model_args"], "stem": 32}
    seed = preset_config("quick", model="seed")
    assert seed.model == "seed" and seed.model_args == {}
    seed.validate()


def test_ablation_adds_one_change_per_step():
    assert STEPS[0].config["model"] == "seed" and STEPS[1].config["model_args"] == {"normalize": "scale"}
    prev = None
    for step in STEPS:
        TrainConfig(**step.config).validate()
        build_model(step.config["model"], **step.config["model_args"])
        if prev is not None and not step.eval_only:
            assert step.config != prev, step.name
        prev = step.config
    assert STEPS[-1].eval_only == {"tta": True}
