"""``hdetach demo`` (``cli``): vanilla vs h-detach LSTM on the copying task over several
seeds, through the sweep engine, with transfer copying and the report's statistics; and
the verdicts it prints, which claim only what the numbers support (``verdicts``)."""
