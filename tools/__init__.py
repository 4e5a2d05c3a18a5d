"""Code generation, flashing, benchmarks and other maintenance tools."""
