"""edgekd: distill a large PyTorch teacher into a deployable, benchmarked edge artifact for a named target."""

__version__ = "0.1.0"
