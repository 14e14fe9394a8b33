"""What the triton kernels accept: the one place that says where they apply.

Kept apart from ``loader`` (which builds the kernels) and ``lstm`` (their
host code) so that the dispatcher and the host code can ask without importing triton.
"""

from __future__ import annotations

import importlib.util

import torch

from hdetach.settings import triton_interpreting

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Beyond this the per-program weight traffic (4 H^2 elements per step, read by every
# program) makes a per-step cuBLAS product spread over the whole GPU the better choice.
MAX_HIDDEN = 1024


def triton_unsupported_reason(
    device: torch.device,
    dtype: torch.dtype,
    steps: int,
    batch: int,
    hidden: int,
    proj_size: int,
    *,
    members: int = 1,
) -> str | None:
    """Why the triton kernels cannot run a layer of these sizes, or None where they can.

    ``batch``: all rows; ``members``: how many LSTMs share them (a population).
    A missing triton package is named last: installing it is no help where another reason
    holds (CPU tensors on torch's CPU-only build, which brings no triton, among them).
    """
    if device.type != "cuda" and not (device.type == "cpu" and triton_interpreting()):
        return f"its kernels run on CUDA tensors (CPU ones under TRITON_INTERPRET=1), got {device}"
    if dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES)
        return f"its kernels take {names}, got {str(dtype).removeprefix('torch.')}"
    if hidden > MAX_HIDDEN:
        return f"its kernels take hidden sizes up to {MAX_HIDDEN}, got {hidden}"
    if proj_size:
        return "its kernels have no projection (proj_size > 0): use the fused backend"
    if steps * batch * 4 * hidden >= 2**31:
        return "its kernels index with int32: the gates must have fewer than 2^31 elements"
    if members * 4 * hidden * hidden >= 2**31:
        return "its kernels index with int32: the members' W_hh must have fewer than 2^31 elements"
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install triton)"
    return None
