"""Data sets: fetching with checksums from mirrors (``download``, shared by the tasks and
captioning), and the ``hdetach data`` command that downloads and verifies MNIST (``cli``)."""
