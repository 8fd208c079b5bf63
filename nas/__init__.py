"""effnas: training-aware neural architecture search (CLI, data, training engine, controllers)."""

__version__ = "0.1.0"
