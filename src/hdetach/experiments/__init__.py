"""The lab: everything that runs the paper's experiments on top of the library.

The library (``import hdetach``: the op, the modules, the gradient-path analysis) never
imports anything from here. This package holds the ``hdetach`` command and what it runs:

- ``config``, ``model``, ``tasks``: what a run is, its model and its data
- ``session``, ``train``, ``checkpoint``, ``runfiles``, ``runlog``: the one training loop,
  its run folder and exact resume
- ``train_population``: several runs trained as one computation
- ``sweep``: grids of runs on local processes, populations or Ray
- ``report``, ``report_study``, ``stats``: tables, figures and statistics of finished runs
- ``transfer``, ``demo``, ``gradients``, ``captioning``, ``bench``: the other subcommands
"""
