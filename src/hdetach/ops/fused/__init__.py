"""The fused backend: one autograd node per layer and direction with a hand-written backward.

``lstm.py`` the forward and the autograd node, ``backward.py`` the fast backward,
``differentiable.py`` the backward that autograd can differentiate (double backward,
torch.func), ``products.py`` the matrix products, ``buffer_pool.py`` the reused activation
buffers, ``cpu_kernel.py`` the compiled CPU recurrence built from ``csrc/lstm_cpu.cpp``.
"""
