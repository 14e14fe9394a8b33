"""Sweeps: a grid of ordinary runs (options x seeds) run locally or on Ray, resumable:
``grid`` (the runs of a grid), ``runner`` and ``engines`` (how they run), ``hdetach sweep``
(``cli``, ``command``)."""
