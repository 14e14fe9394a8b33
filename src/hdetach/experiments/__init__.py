"""The lab: everything that runs the paper's experiments on top of the library.

The library (``import hdetach``: the op, the modules, the gradient-path analysis) never
imports anything from here. This package holds the ``hdetach`` command and what it runs,
one folder per group; each subcommand's entry is its package's ``cli`` module, which
declares its options without torch and names the function of its ``command`` module that
carries it out (imported only once the options parse):

- ``cli``: wires the subcommands (only the chosen one's module is imported)
- ``options`` (torch-free: ``Config``, its choices and help), ``errors`` (``ConfigError``),
  ``config`` (their validation and resolution), ``model``, ``footprint``, ``tasks`` (one
  ``Task`` interface; ``tasks.definitions``: what each task is, torch-free;
  ``tasks.registry``: every task by name, its data class imported on demand through
  ``lazy``): what a run is, its model, its memory estimate and its data
- ``data``: fetching with checksums (``data.download``) and ``hdetach data``
- ``run``: a run folder's life: the training run's state (``session``), ``checkpoint``
  and exact resume, ``files``, ``lock``, ``log``, ``interrupt`` (stopping at a step)
- ``train``: the one training loop (``train.loop``), several runs trained as one
  computation (``train.population``), ``hdetach train``
- ``sweep``: grids of runs on local processes, populations or Ray
- ``report``: tables, figures and statistics of finished and unfinished runs (``runs``,
  ``tables``, ``study``, ``stability``, ``stats``, ``plotting``)
- ``transfer``, ``demo``, ``gradients``, ``captioning``: the other experiments
- ``bench``: the speed tables (``table``, ``floors``, ``population``, ``timing``)
"""
