"""Training: ``fit``, the loop, run directories, run state and checkpoints, the step guard,
the compiled replay and its CUDA graph, distributed data parallelism, schedules, and the
non-finite-step report.

- :mod:`~pyro_vae.training.fit`: :func:`~pyro_vae.training.fit.fit` builds a run and wires it;
- :mod:`~pyro_vae.training.loop`: the training loop (batch, loss, guard, step, log), the one
  to read first;
- :mod:`~pyro_vae.training.rundir`: the run directory, resuming, the JSONL logs;
- :mod:`~pyro_vae.training.lock`: one writer per run directory (an OS lock that every
  command writing a run holds);
- :mod:`~pyro_vae.training.summary`: mean ELBO terms, M2's accuracy and the test summary;
- :mod:`~pyro_vae.training.labels`: the labels a conditional or semi-supervised VAE sees;
- :mod:`~pyro_vae.training.stops`: Ctrl-C and non-finite steps, and their messages;
- :mod:`~pyro_vae.training.errors`: what training raises;
- :mod:`~pyro_vae.training.guard`, :mod:`~pyro_vae.training.nonfinite`,
  :mod:`~pyro_vae.training.replay`, :mod:`~pyro_vae.training.cudagraph`,
  :mod:`~pyro_vae.training.distributed`,
  :mod:`~pyro_vae.training.schedules`, :mod:`~pyro_vae.training.checkpoint`,
  :mod:`~pyro_vae.training.runstate`: the parts the loop uses.
"""
