class ConvergenceError(RuntimeError):
    """A run that cannot go on: a non-finite objective, or a matrix that stays
    indefinite after the largest jitter. The message says where it happened."""
