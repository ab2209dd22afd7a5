"""The layering holds when the code runs, not only in the source: serving and predicting
never load the training engine, and `import fmnist` is lazy. Each check runs in a fresh
interpreter, so nothing this test process imported can hide an import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What a server or a `--help` must never pay for: the training engine, the tuner, plotting,
# and torch._dynamo (2.4 s, which PyTorch imports when the first optimizer is built).
HEAVY = ("fmnist.training.trainer", "fmnist.studies", "optuna", "matplotlib", "torch._dynamo")


def loaded_after(code: str) -> list[str]:
    probe = f"""
import json, sys
{code}
print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import fmnist",
        "import fmnist.serve",
        "import fmnist.serve.app, fmnist.serve.server",
        "import fmnist.runtime.predict, fmnist.runtime.inference",
        "from fmnist import load_model, predict, CLASS_NAMES",
    ],
)
def test_serving_and_predicting_never_load_training(code):
    assert loaded_after(code) == []


def help_of(*command: str) -> str:
    """Code that prints `fmnist COMMAND --help` in this interpreter, as the entry point does."""
    argv = ["fmnist", *command, "--help"]
    return f"""
import sys
sys.argv = {argv!r}
from fmnist.cli import main
try:
    main()
except SystemExit as e:
    assert e.code == 0, e.code
"""


def test_fmnist_help_imports_no_torch_at_all():
    probe = help_of() + "print('torch' in sys.modules, sorted(m for m in sys.modules if m.startswith('fmnist.cli.')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    *text, last = out.stdout.strip().splitlines()
    assert "Commands:" in text and "serve" in "".join(text)
    assert last == "False ['fmnist.cli.errors', 'fmnist.cli.main', 'fmnist.cli.options']"  # no command's module


@pytest.mark.parametrize("command", [("serve",), ("predict",), ("evaluate",), ("export",)])
def test_help_of_serving_and_predicting_commands_never_loads_training(command):
    assert loaded_after(help_of(*command)) == []


def test_import_fmnist_is_lazy_and_the_api_still_resolves():
    assert loaded_after("import fmnist; assert 'torch' not in sys.modules, 'import fmnist loaded torch'") == []
    loaded = loaded_after("import fmnist; fmnist.train; fmnist.TrainConfig")
    assert "fmnist.training.trainer" in loaded


def test_unknown_attribute_is_an_attribute_error():
    import fmnist

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fmnist.nope  # noqa: B018
