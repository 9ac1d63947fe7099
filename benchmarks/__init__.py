"""Speed benchmarks of selfish-rnn (``make bench`` -> ``python -m benchmarks.run``); see ``benchmarks/run.py``."""
