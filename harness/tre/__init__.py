"""The TRE controller: calibration, the neural signal and its mapping, per-token parameters per condition."""
