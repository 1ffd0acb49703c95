"""Cross-model injection by layer, orthogonal Procrustes and learned adapters (seed 003)."""
