"""A run folder's life: the training run's state (``session``), its checkpoints and exact
resume (``checkpoint``), its files written strictly and atomically (``files``), the lock
that lets one process at a time train it (``lock``), where it reports (``log``), and
stopping at a step boundary on Ctrl-C or SIGTERM (``interrupt``)."""
