"""The latent bridge (seed 002): modules, sender-state cache, receiver inputs, training, evaluation, analysis."""
