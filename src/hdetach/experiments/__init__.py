"""The lab: everything that runs the paper's experiments on top of the library.

The library (``import hdetach``: the op, the modules, the gradient-path analysis) never
imports anything from here. This package holds the ``hdetach`` command and what it runs:

- ``cli``: wires the subcommands (only the chosen one's module is imported)
- ``config``, ``model``, ``tasks`` (``tasks.registry``: every task by name): what a run
  is, its model and its data; ``download`` and ``data``: fetching and checking MNIST
- ``session``, ``train``, ``checkpoint``, ``runfiles``, ``runlog``, ``interrupt``: the one
  training loop, its run folder, exact resume, stopping at a step boundary
- ``train_population``: several runs trained as one computation
- ``sweep``: grids of runs on local processes, populations or Ray
- ``report``, ``report_runs``, ``report_study``, ``stats``, ``plotting``: tables, figures and
  statistics of finished and unfinished runs
- ``transfer``, ``demo``, ``gradients``, ``captioning``: the other experiments
- ``bench``, ``bench_population``, ``timing``: the speed tables
"""
