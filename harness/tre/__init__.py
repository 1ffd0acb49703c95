"""The TRE sweep's parts: calibration, the signal and its mapping, per-condition controllers, analysis, figures."""
