"""The lab: everything that runs the paper's experiments on top of the library.

The library (``import hdetach``: the op, the modules, the gradient-path analysis) never
imports anything from here. This package holds the ``hdetach`` command and what it runs,
one folder per group; each subcommand's entry is its package's ``cli`` module:

- ``cli``: wires the subcommands (only the chosen one's module is imported)
- ``config``, ``model``, ``footprint``, ``tasks`` (``tasks.registry``: every task by
  name): what a run is, its model, its memory estimate and its data
- ``data``: fetching with checksums (``data.download``) and ``hdetach data``
- ``run``: a run folder's life: the training run's state (``session``), ``checkpoint``
  and exact resume, ``files``, ``lock``, ``log``, ``interrupt`` (stopping at a step)
- ``train``: the one training loop (``train.loop``), several runs trained as one
  computation (``train.population``), ``hdetach train``
- ``sweep``: grids of runs on local processes, populations or Ray
- ``report``: tables, figures and statistics of finished and unfinished runs (``runs``,
  ``tables``, ``study``, ``stability``, ``stats``, ``plotting``)
- ``transfer``, ``demo``, ``gradients``, ``captioning``: the other experiments
- ``bench``: the speed tables (``floors``, ``population``, ``timing``)
"""
