"""Benchmarks of the service: what it costs on top of bare training, and how fast its pieces are.

``python bench/run.py`` measures (modules :mod:`bench.overhead`, :mod:`bench.analysis10k`,
:mod:`bench.pruning`, :mod:`bench.data_path`, :mod:`bench.profiling`), writes every measurement
to one JSON file, and renders ``bench/RESULTS.md`` from that JSON alone (:mod:`bench.results`).
"""
