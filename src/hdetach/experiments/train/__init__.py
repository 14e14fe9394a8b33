"""Training: the one training loop (``loop``), several runs trained as one computation
(``population``), and the ``hdetach train`` command (``cli``)."""
