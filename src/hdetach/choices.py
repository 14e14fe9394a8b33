"""The allowed values of the LSTM's string options, torch-free: the library checks its
arguments against these tuples, and the ``hdetach`` command lists them in its options
without importing torch."""

BACKENDS = ("auto", "native", "fused", "triton", "reference")
DETACH_PATHS = ("h", "c")
DETACH_SCOPES = ("batch", "sample")
LAYER_MASKS = ("shared", "independent")
