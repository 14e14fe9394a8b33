"""results/paper/check_gradients.py, the campaign's check of its gradients at trained
weights: it agrees where the campaign is right, and it can fail."""

import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import TINY_COPY

from hdetach.experiments.config import Config
from hdetach.experiments.train.population import train_population

SCRIPT = Path(__file__).parents[2] / "results" / "paper" / "check_gradients.py"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def check():
    spec = importlib.util.spec_from_file_location("check_gradients", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _errors(table: str) -> dict[str, float]:
    """Run name -> the campaign's gradient error, from the printed table."""
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| p_detach=")]
    return {cells[0].lstrip("| "): float(cells[4]) for cells in rows}


def test_the_gradient_check_agrees_with_the_campaign_and_catches_a_wrong_mask(
    tmp_path, capsys, monkeypatch, check
):
    study = tmp_path / "study"
    train_population(
        [
            Config(**TINY_COPY, p_detach=p, max_steps=10, run_dir=str(study / f"p_detach={p}"))
            for p in (0.0, 0.5)
        ]
    )
    check.main(study, str(tmp_path / "no-data"))  # the copying task reads no data
    errors = _errors(capsys.readouterr().out)
    assert set(errors) == {"p_detach=0.0", "p_detach=0.5"}
    assert max(errors.values()) < 1e-4

    # The same check with a reference that never blocks h_{t-1}: the h-detach run disagrees.
    original = check.reference_gradients

    def reference_ignoring_the_mask(run, x, y, dtype):
        return original({**run, "mask": torch.zeros_like(run["mask"])}, x, y, dtype)

    monkeypatch.setattr(check, "reference_gradients", reference_ignoring_the_mask)
    check.main(study, str(tmp_path / "no-data"))
    errors = _errors(capsys.readouterr().out)
    assert errors["p_detach=0.0"] < 1e-4 and errors["p_detach=0.5"] > 1e-2
