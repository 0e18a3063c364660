"""Training: ``fit``, the loop, run directories, run state and checkpoints, the step guard,
the compiled replay, distributed data parallelism, schedules, and the non-finite-step report.
"""
