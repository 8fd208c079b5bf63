"""Data, the training engine (steps, optimizers, schedules, evaluation) and full training runs."""
