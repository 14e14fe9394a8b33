"""A run folder's life: its files and the lock that lets one process at a time train it,
read and written there alone (``folder``), the training run's state (``session``), its
checkpoints and exact resume (``checkpoint``), strict JSON and atomic writes (``files``),
where it reports (``log``), and stopping at a step boundary on Ctrl-C or SIGTERM
(``interrupt``)."""
