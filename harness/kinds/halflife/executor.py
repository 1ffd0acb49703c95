"""Half-life, the run: chunked generation from each prompt and seed, both arms, with the router read
at every generated token; optionally the model is first trained on text (the learned-routing stand-in)."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from harness.context import RunContext, RunOutput
from harness.kinds.halflife.pretrain import pretrain
from harness.kinds.halflife.routing import last_position_logits, layer_stats
from registry.errors import SpecError
from registry.kinds.halflife import HalfLifeSpec, RandomPrompt


def prompt_ids(spec: HalfLifeSpec, prompt, tokenizer, vocab: int, seed: int) -> list[int]:
    if isinstance(prompt, RandomPrompt):
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, vocab, (prompt.random_tokens,), generator=generator).tolist()
    ids = tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    if spec.add_bos and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    return ids


def choose(logits: torch.Tensor, spec: HalfLifeSpec, generator: torch.Generator) -> int:
    """Greedy, or a seeded draw after temperature, top-k and top-p (nucleus) filtering."""
    if not spec.sampling.sample:
        return int(torch.argmax(logits))
    s = spec.sampling
    scores = logits.float() / s.temperature
    kth = torch.topk(scores, min(s.top_k, scores.numel())).values[-1]
    scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    ordered, order = torch.sort(probs, descending=True)
    outside = torch.cumsum(ordered, 0) - ordered > s.top_p  # keep the smallest prefix reaching top_p
    ordered[outside] = 0.0
    return int(order[torch.multinomial(ordered / ordered.sum(), 1, generator=generator)])


class _Stepper:
    """One trajectory's model state: feed tokens, keep the cache, the next-token logits and the router
    logits of the last position fed."""

    def __init__(self, lm, name: str):
        self.lm, self.name, self.cache = lm, name, DynamicCache()
        self.logits: torch.Tensor | None = None
        self.router: list[torch.Tensor] | None = None

    @torch.no_grad()
    def feed(self, ids: list[int]) -> None:
        inputs = torch.tensor([ids], device=self.lm.device)
        try:
            out = self.lm.model(input_ids=inputs, past_key_values=self.cache, use_cache=True, output_router_logits=True)
        except TypeError:  # a model class without the option
            out = None
        router = getattr(out, "router_logits", None)
        if not router:
            raise SpecError(f"{self.name} returns no router logits (a dense model?); the half-life kind needs a "
                            "mixture-of-experts model", field="model")
        self.logits = out.logits[0, -1]
        self.router = last_position_logits(router, 1, len(ids))


def trajectory(spec: HalfLifeSpec, lm, prompt, seed: int, arm: str, bar=None) -> list[dict]:
    """Records of one (prompt, seed, arm): one per generated token, with the routing that produced it."""
    tokenizer = lm.tokenizer
    stepper = _Stepper(lm, spec.model)
    stepper.feed(prompt_ids(spec, prompt, tokenizer, lm.model.config.vocab_size, seed))
    perturbation = tokenizer(spec.perturbation.text, add_special_tokens=False)["input_ids"]
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for chunk in range(spec.chunks):
        if arm == "perturbed" and chunk > 0:
            stepper.feed(perturbation)
        for index in range(spec.chunk_tokens):
            stats = [layer_stats(layer[0], spec.model, i) for i, layer in enumerate(stepper.router)]
            token = choose(stepper.logits, spec, generator)
            rows.append({"prompt": prompt.id, "seed": seed, "arm": arm, "chunk": chunk, "index": index,
                         "token": token, "piece": tokenizer.decode([token]),
                         "entropy": [s["entropy"] for s in stats], "margin": [s["margin"] for s in stats],
                         "usage": [s["usage"] for s in stats]})
            stepper.feed([token])
        if bar is not None:
            bar.update(1)
    return rows


def run(spec: HalfLifeSpec, ctx: RunContext) -> RunOutput:
    with ctx.phase("load_model"):
        lm = ctx.models.get(spec.model, spec.dtype, spec.quantization)
    curves: list[dict] = []
    if spec.pretrain is not None:
        with ctx.phase("pretrain"):
            curves, status = pretrain(spec, lm, ctx)
        ctx.state_use["pretrain"] = status
    lm.model.eval()
    bar = ctx.progress(total=len(spec.prompts) * len(spec.seeds) * len(spec.arms()) * spec.chunks,
                       desc="half-life", unit="chunk")
    records = []
    for prompt in spec.prompts:
        for seed in spec.seeds:
            for arm in spec.arms():
                with ctx.phase(f"generation.{arm}"):
                    records += trajectory(spec, lm, prompt, seed, arm, bar)
    bar.close()
    return RunOutput(records=records, curves=curves)
