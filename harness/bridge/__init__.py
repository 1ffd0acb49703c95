"""The latent bridge: modules, sender-state cache, receiver inputs, training, evaluation."""
