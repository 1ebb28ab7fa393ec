"""Benchmarks of portable-cnn against the notebook and PyTorch (``python benchmarks/run.py``)."""
