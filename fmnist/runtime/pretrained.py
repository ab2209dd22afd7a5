"""The model that ships inside the package, so a photo can be predicted and the server started
right after `pip install`, before any training.

It is an ordinary fmnist model file, trained by fmnist's own code (`make pretrained`), and is
loaded with the same checks as any other (tensor hash, shapes, finite weights). Its card, a
JSON file beside it, says how it was trained, on which machine, and what it scored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmnist.core.errors import FmnistError

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
PRETRAINED_NAME = "quick"
PRETRAINED_FILE = f"{PRETRAINED_NAME}.safetensors"
CARD_FILE = f"{PRETRAINED_NAME}.json"


def pretrained_path(directory: Path = PRETRAINED_DIR) -> Path:
    """The packaged model file; one error line when this installation has none."""
    path = directory / PRETRAINED_FILE
    if not path.is_file():
        raise FmnistError(
            f"this installation of fmnist has no pretrained model ({path} is missing); "
            "reinstall the package, or run `make pretrained` in a checkout"
        )
    return path


def pretrained_card(directory: Path = PRETRAINED_DIR) -> dict[str, Any]:
    """How the packaged model was trained and what it scored (empty when the card is missing)."""
    path = directory / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FmnistError(f"{path}: the pretrained model's card is damaged ({e}); reinstall fmnist") from None
    if not isinstance(card, dict):
        raise FmnistError(f"{path}: the pretrained model's card is not a JSON object; reinstall fmnist")
    return card


def describe_card(card: dict[str, Any]) -> str:
    """One line for a user: what the packaged model is and what it scored."""
    if not card:
        return "fmnist's pretrained model"
    test = card.get("test_accuracy")
    scored = f", {test * 100:.2f}% test accuracy" if isinstance(test, (int, float)) else ""
    return (
        f"fmnist's pretrained model ({card.get('preset', '?')} preset, seed {card.get('seed', '?')}{scored}; "
        f"trained {card.get('date', '?')} on {card.get('cpu_kind', '?')})"
    )
