"""Speed and memory benchmarks (not tests): ``python -m benchmarks.<name>``, see each module."""
