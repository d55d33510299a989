"""tenfold benchmarks: one folder per method, ``bench_*.py`` files with a ``main(argv)``."""
