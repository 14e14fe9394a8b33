"""The fused backend's matrix products, into its buffers, on the faster CPU kernel.

Every product here is ``a @ weight^T`` with the weight in ``torch.nn.Linear``'s layout:
(Y, X) for one model, (K, Y, X) for a population (member k's rows, the k-th block of
B rows, meet ``weight[k]``; see ``members.py``).

On a CPU running one thread (each process of a sweep), float32 products run on oneDNN
(``torch.ops.mkldnn._linear_pointwise``, the kernel torch.compile uses for CPU linear
layers) rather than ``torch.mm`` (MKL): on the AMD EPYC of ``benchmarks/``, on one
thread, MKL's product of one recurrent step (100 x 128 by 128 x 512) runs at about 105
GFLOP/s and oneDNN's at about 190, and the fused backend's forward+backward is 1.10x
to 1.24x faster with oneDNN; on two threads MKL's products scale better and the two are
even (0.92x to 0.98x; ``benchmarks/onednn_vs_mkl.py``). ``HDETACH_ONEDNN`` (read at each
call): unset or ``auto`` as said, ``1`` oneDNN on any thread count, ``0`` never. Elsewhere
(CUDA, other dtypes, a torch without oneDNN) the products are torch's mm, addmm and bmm.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hdetach.settings import onednn_products


def _onednn_linear_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._linear_pointwise)
    except (AttributeError, RuntimeError):
        return False


ONEDNN_LINEAR = _onednn_linear_available()  # once: torch.compile must not trace the check


def uses_onednn(a: Tensor) -> bool:
    """Whether products with ``a`` run on oneDNN (see the module docstring); never while
    torch.compile traces: the compiler picks its own kernels."""
    if torch.compiler.is_compiling():
        return False
    setting = onednn_products()
    if setting == "0" or not (a.device.type == "cpu" and a.dtype == torch.float32):
        return False
    return ONEDNN_LINEAR and (setting == "1" or torch.get_num_threads() == 1)


def _onednn(a: Tensor, weight: Tensor, bias: Tensor | None = None, add: Tensor | None = None):
    """A new tensor bias + add + a @ weight^T from oneDNN."""
    if add is None:
        return torch.ops.mkldnn._linear_pointwise(a, weight, bias, "none", [], "")
    return torch.ops.mkldnn._linear_pointwise.binary(a, add, weight, bias, "add")


def product(a: Tensor, weight: Tensor, *, out: Tensor, add: Tensor | None = None) -> Tensor:
    """out = add + a @ weight^T, written into ``out``; returns ``out``.

    a (N, X) with N = K * B rows, weight (Y, X) or (K, Y, X); out and add (N, Y); ``add``
    may be ``out`` itself (accumulate in place).
    """
    if uses_onednn(a):
        if weight.dim() == 2:
            return out.copy_(_onednn(a, weight, add=add))
        rows = a.shape[0] // weight.shape[0]
        for k in range(weight.shape[0]):  # a batched oneDNN product is not exposed
            part = slice(k * rows, (k + 1) * rows)
            out[part] = _onednn(a[part], weight[k], add=None if add is None else add[part])
        return out
    w_t = weight.transpose(-2, -1)
    if weight.dim() == 2:
        if add is out:
            return out.addmm_(a, w_t)
        return torch.mm(a, w_t, out=out) if add is None else torch.addmm(add, a, w_t, out=out)
    k = weight.shape[0]
    a3, out3 = a.reshape(k, -1, a.shape[-1]), out.view(k, -1, out.shape[-1])
    if add is out:
        out3.baddbmm_(a3, w_t)
    elif add is None:
        torch.bmm(a3, w_t, out=out3)
    else:
        torch.baddbmm(add.reshape(k, -1, add.shape[-1]), a3, w_t, out=out3)
    return out


def sigmoid_of_sum_(z: Tensor, a: Tensor, weight: Tensor) -> None:
    """z = sigmoid(z + a @ weight^T), in place: a step's gates. On oneDNN the sigmoid reads
    the product's fresh tensor (per member for a population) instead of a copy of it."""
    if not uses_onednn(a):
        product(a, weight, out=z, add=z).sigmoid_()
    elif weight.dim() == 2:
        torch.sigmoid(_onednn(a, weight, add=z), out=z)
    else:
        rows = a.shape[0] // weight.shape[0]
        for k in range(weight.shape[0]):
            part = slice(k * rows, (k + 1) * rows)
            torch.sigmoid(_onednn(a[part], weight[k], add=z[part]), out=z[part])


def block_product(
    a: Tensor,
    weight: Tensor,
    *,
    out: Tensor,
    bias: Tensor | None = None,
    onednn: bool | None = None,
) -> None:
    """out = bias + a @ weight^T for a block of steps: a (S, N, X), out (S, N, Y), bias
    (Y,) or (K, Y). For a population, member by member, each as one model's block.
    ``onednn``: None as ``uses_onednn`` says; False: torch's addmm, which writes ``out``
    in place (oneDNN returns a new tensor, copied into ``out``)."""
    if weight.dim() == 3:
        rows = a.shape[1] // weight.shape[0]
        for k in range(weight.shape[0]):
            part = slice(k * rows, (k + 1) * rows)
            result = torch.empty(a.shape[0], rows, weight.shape[1], dtype=a.dtype, device=a.device)
            member_bias = None if bias is None else bias[k]
            block_product(a[:, part], weight[k], out=result, bias=member_bias, onednn=onednn)
            out[:, part] = result
        return
    flat_a, flat_out = a.reshape(-1, a.shape[-1]), out.view(-1, out.shape[-1])
    if uses_onednn(a) if onednn is None else onednn:
        flat_out.copy_(_onednn(flat_a, weight, bias))
    elif bias is None:
        torch.mm(flat_a, weight.t(), out=flat_out)
    else:
        torch.addmm(bias, flat_a, weight.t(), out=flat_out)


def add_outer_(acc: Tensor, d: Tensor, v: Tensor, onednn: bool | None = None) -> None:
    """acc += sum over steps and rows of d^T v, in place: d (..., N, G), v (..., N, X),
    acc (G, X), or (K, G, X) for a population: member by member, each member's rows
    gathered into one matrix (a small copy) so that its product is one model's, the same
    shapes in the same order as when it trains alone."""
    if acc.dim() == 3:
        rows = d.shape[-2] // acc.shape[0]
        for k in range(acc.shape[0]):
            part = slice(k * rows, (k + 1) * rows)
            add_outer_(acc[k], d[..., part, :], v[..., part, :], onednn)
        return
    flat_d, flat_v = d.reshape(-1, d.shape[-1]), v.reshape(-1, v.shape[-1])
    if uses_onednn(acc) if onednn is None else onednn:
        acc += _onednn(flat_d.t(), flat_v.t())
    elif flat_v.shape[-1] < 32:
        # A narrow v (few inputs): MKL's d^T v with a narrow result runs at a fifth of the
        # speed of (v^T d)^T (5 vs 26 GFLOP/s for 3000 rows of 512 by 9, one thread).
        acc += torch.mm(flat_v.t(), flat_d).t()
    else:
        acc.addmm_(flat_d.t(), flat_v)
