"""Side-by-side benchmarks of the mock server and the reference client (`make bench`).

Every figure is a ratio of two things measured in one run, interleaved; see `harness`. The
measurements are in `suite`, the results file / README table / plot in `report`.
"""
