"""Routing-pressure half-life of a mixture-of-experts model (seed 004)."""
