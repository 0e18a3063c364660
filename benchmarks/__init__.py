"""Benchmarks of pyro-vae against a hand-written PyTorch reference (not installed)."""
