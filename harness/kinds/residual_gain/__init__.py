"""Residual-stream gain (seed 001): per-layer norms and gains, W_U spectral norm, the H18 correlation."""
