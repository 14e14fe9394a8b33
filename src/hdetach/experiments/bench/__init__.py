"""The speed tables (``hdetach bench``: its options ``cli``, the table ``table``): each
backend timed against ``torch.nn.LSTM`` and the authors' loop, side by side, and a loop
over ``hdetach.LSTMCell`` against the same loop over ``torch.nn.LSTMCell``; the floors
every implementation must pay (``floors``); populations against one LSTM per run
(``population``); and how a time is taken (``timing``, on the ``clocks``), which the
scripts in ``benchmarks/`` share."""
