"""Reports of finished and unfinished runs: ``report.report`` writes the figures and the
Markdown table of a set of run folders (``hdetach report``, ``cli``), reading each folder
into a ``runs.RunRecord``; its sections are ``tables``, ``study`` (success, speed and
their statistics, ``stats``) and ``stability``; ``plotting`` makes figures without pyplot."""
