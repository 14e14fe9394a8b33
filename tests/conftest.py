import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: the tests' models are tiny, and one thread is
    several times faster than two there (less synchronisation per small op), which keeps
    the suite short on 2-core CI machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def trained_copy_run(tmp_path_factory):
    """A copying run (T=1, one-hot) trained well above chance, shared by the tests that
    need a model that has learned something: (run_dir, summary)."""
    from hdetach.experiments.train.loop import Config, train

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is the fastest
    try:
        summary = train(
            Config(
                task="copy",
                T=1,
                input_encoding="onehot",
                hidden_size=64,
                # 4 epochs: after 3 both CPU kernels stood at 0.50 test accuracy (eager
                # 0.504, compiled 0.492: float rounding steers the run), on the 0.5 line
                # of test_short_copy_run_learns_well_above_chance; after 4, 0.63 and 0.59.
                epochs=4,
                steps_per_epoch=400,
                n_train=5000,
                n_val=500,
                lr=1e-2,
                p_detach=0.25,
                run_dir=str(run_dir),
            ),
            progress=False,
        )
    finally:
        torch.set_num_threads(n)
    return run_dir, summary


@pytest.fixture(params=["compiled", "python"])
def cpu_kernel(request, monkeypatch):
    """Run the test on both CPU kernels of the fused backend (``HDETACH_CPU_KERNEL``): the
    compiled recurrence and the eager steps. The compiled one is skipped, with its reason,
    only where it cannot be built here (no compiler)."""
    if request.param == "compiled":
        from hdetach.ops.fused.cpu_kernel import unavailable_reason

        reason = unavailable_reason()
        if reason is not None:
            pytest.skip(f"the compiled CPU recurrence is unavailable: {reason}")
    monkeypatch.setenv("HDETACH_CPU_KERNEL", request.param)
    return request.param
