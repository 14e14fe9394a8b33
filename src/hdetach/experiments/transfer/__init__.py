"""Transfer copying: a copy-task model evaluated at longer gaps T than it was trained on
(``evaluate``), and the ``hdetach transfer`` command (``cli``)."""
