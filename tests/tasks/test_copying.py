import pytest
import torch

from hdetach.experiments.tasks.copying import CopyingTask, copying_tokens, encode


def test_copying_tokens_layout():
    symbols = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 1, 2], [8, 8, 8, 8, 8, 8, 8, 8, 8, 8]])
    T = 7
    x, y = copying_tokens(symbols, T)
    assert x.shape == y.shape == (2, T + 20)
    for b in range(2):
        s = symbols[b].tolist()
        # 10 symbols, T-1 blanks, the delimiter, 10 blanks
        assert x[b].tolist() == s + [0] * (T - 1) + [9] + [0] * 10
        # T+10 blanks, then the symbols
        assert y[b].tolist() == [0] * (T + 10) + s


def test_encodings():
    x, _ = copying_tokens(torch.tensor([[3] * 10]), 4)
    scalar = encode(x, "scalar")
    assert scalar.shape == (1, 24, 1) and scalar.dtype == torch.float32
    assert torch.equal(scalar[0, :, 0], x[0].float())
    onehot = encode(x, "onehot")
    assert onehot.shape == (1, 24, 10)
    assert torch.equal(onehot.argmax(-1), x) and torch.equal(onehot.sum(-1), torch.ones(1, 24))


def test_task_data_fixed_by_seed_and_splits_differ():
    a = CopyingTask(5, "scalar", 300, 200, 200, seed=3)
    b = CopyingTask(5, "scalar", 300, 200, 200, seed=3)
    c = CopyingTask(5, "scalar", 300, 200, 200, seed=4)
    assert torch.equal(a.symbols["train"], b.symbols["train"])
    assert not torch.equal(a.symbols["train"], c.symbols["train"])
    assert not torch.equal(a.symbols["val"], a.symbols["test"])
    s = a.symbols["train"]
    assert s.min() == 1 and s.max() == 8  # uniform over {1..8}
    x, y = a.batch("val", torch.tensor([0, 5]))
    assert x.shape == (2, 25, 1) and y.shape == (2, 25)
    assert torch.equal(y[:, -10:], a.symbols["val"][[0, 5]])


def test_accuracy_counts_only_the_last_ten_steps():
    task = CopyingTask(5, "onehot", 10, 10, 10, seed=0)
    _, y = task.batch("val", torch.arange(4))
    logits = torch.nn.functional.one_hot(y, 9).float() * 10
    logits[:, :-10] = 0  # wrong everywhere before the copy phase: must not matter
    loss, m = task.loss_and_metrics(logits, y)
    assert m["acc"] == 1.0
    logits[:, -1] = torch.roll(logits[:, -1], 1, dims=-1)  # one of 10 outputs wrong
    assert task.loss_and_metrics(logits, y)[1]["acc"] == pytest.approx(0.9)
