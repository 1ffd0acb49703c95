"""Default configs of the tiny random models (plain data, so the registry can read dimensions without torch)."""

_COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
               max_position_embeddings=1024, initializer_range=0.05)

# Small but structurally complete: several layers, grouped-query attention, gated MLPs.
TINY_DEFAULTS: dict[str, dict] = {
    "llama": dict(_COMMON, num_key_value_heads=2, head_dim=16),
    "mistral": dict(_COMMON, num_key_value_heads=2, head_dim=16, sliding_window=None),
    "qwen2": dict(_COMMON, num_key_value_heads=2, head_dim=16),
    "gemma": dict(_COMMON, num_key_value_heads=2, head_dim=16),
    "gemma2": dict(_COMMON, num_key_value_heads=2, head_dim=16, sliding_window=64),
    "gemma3_text": dict(_COMMON, num_hidden_layers=6, num_key_value_heads=1, head_dim=16, sliding_window=64),
    "apertus": dict(_COMMON, num_key_value_heads=2, head_dim=16, max_position_embeddings=16384),
    "gpt_neox": dict(_COMMON, rotary_pct=0.25),
    "mixtral": dict(_COMMON, num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2),
}
