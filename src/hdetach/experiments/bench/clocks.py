"""The clocks a benchmark can time with (``timing.set_clock``), torch-free: ``hdetach
bench --clock`` lists them without importing torch."""

import time

# wall: elapsed time; cpu: the calling thread's CPU time, for one thread on a loaded
# machine, where the waits for a core would swamp the work.
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
