import pytest
import torch

from hdetach.experiments.tasks.adding import AddingTask, adding_sequences


def test_adding_format():
    T = 20
    x, y = adding_sequences(500, T, torch.Generator().manual_seed(0))
    assert x.shape == (500, T, 2) and y.shape == (500,)
    values, marker = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() < 1
    assert torch.equal(marker.sum(1), torch.full((500,), 2.0))
    assert set(marker.unique().tolist()) == {0.0, 1.0}
    # one marker in each half
    assert torch.equal(marker[:, : T // 2].sum(1), torch.ones(500))
    assert torch.allclose(y, (values * marker).sum(1))


def test_adding_task_and_bad_length():
    task = AddingTask(10, 50, 20, 20, seed=1)
    x, y = task.batch("train", torch.tensor([0, 1, 2]))
    assert x.shape == (3, 10, 2) and y.shape == (3,)
    loss, m = task.loss_and_metrics(y.unsqueeze(-1), y)
    assert loss.item() == 0 and m["mse"] == 0
    with pytest.raises(ValueError, match="T must be >= 2"):
        adding_sequences(3, 1, torch.Generator())
