"""The TRE sweep (seed 000): calibration, signal and mapping, controllers, per-row sampling and generation, text metrics, analysis."""
