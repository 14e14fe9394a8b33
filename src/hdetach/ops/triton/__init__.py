"""The Triton backend (CUDA): ``lstm.py`` the autograd node, ``kernels.py`` the Triton
kernels, ``loader.py`` imports them only once the backend is used, ``support.py`` says
where they can run. (Inside this package ``import triton`` is the Triton package itself.)"""
