"""Benchmarks (``rrr bench NAME``): one module per benchmark, its report prose in
``templates/``, results in ``benchmarks/results/``.

- :mod:`~rrrdsl.bench.common`: shared constants, markdown rows and tables, provenance,
  report templates, atomic writes;
- :mod:`~rrrdsl.bench.table` and :mod:`~rrrdsl.bench.table_report`: ``rrr bench table``, the
  paper's 2D table against exact truth;
- :mod:`~rrrdsl.bench.pyro`: ``rrr bench pyro``, annealed HMC against pyro's NUTS;
- :mod:`~rrrdsl.bench.scaling`: ``rrr bench scaling``, wall time and memory against particles
  and leaves;
- :mod:`~rrrdsl.bench.compiling`: ``rrr bench compile``, parse and compile time against the
  number of leaves, and the compiled plan's overhead;
- :mod:`~rrrdsl.bench.samplers`, :mod:`~rrrdsl.bench.line_integral`,
  :mod:`~rrrdsl.bench.models`, :mod:`~rrrdsl.bench.digits`: ``rrr bench samplers``,
  ``line_integral``, ``models``, ``digits`` (every sampler on ``ring * bar``; line-integral
  Metropolis; the shipped learned models; guidance on 8x8 digits);
- :mod:`~rrrdsl.bench.cli`: the ``rrr bench`` argparse commands (``add_bench_parser``).

A new benchmark is a module with ``main(args, command) -> int`` and an entry in
:data:`rrrdsl.bench.cli.BENCHMARKS`.
"""
