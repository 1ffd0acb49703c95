"""Half-life, the run: chunked generation from each prompt and seed, both arms, with the router read
at every generated token; optionally the model is first trained on text (the learned-routing stand-in)."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from harness.context import RunContext
from harness.kinds.contract import RunOutput
from harness.kinds.halflife.pretrain import pretrain
from harness.kinds.halflife.routing import last_position_logits, layer_stats
from harness.models.lm import with_cache
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
            out = self.lm.model(input_ids=inputs, **with_cache(self.cache), use_cache=True, output_router_logits=True)
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
    ids = prompt_ids(spec, prompt, tokenizer, lm.model.config.vocab_size, seed)
    stepper.feed(ids)
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
            if not rows[1:]:  # the trajectory's first row keeps the prompt as the model read it (a random one too)
                rows[0]["prompt_tokens"] = ids
            stepper.feed([token])
        if bar is not None:
            bar.update(1)
    return rows


def run(spec: HalfLifeSpec, ctx: RunContext) -> RunOutput:
    """Every (prompt, seed, arm) trajectory; with `pretrain`, once per training seed, each from the same initial
    weights (records carry `train_seed`)."""
    with ctx.phase("load_model"):
        lm = ctx.models.get(spec.model, spec.dtype, spec.quantization)
    train_seeds: list[int | None] = [None]
    if spec.pretrain is not None:
        train_seeds = list(spec.pretrain.seeds) or [spec.seed]
        initial = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
    curves: list[dict] = []
    bar = ctx.progress(total=len(train_seeds) * len(spec.prompts) * len(spec.seeds) * len(spec.arms()) * spec.chunks,
                       desc="half-life", unit="chunk")
    records = []
    for train_seed in train_seeds:
        if train_seed is not None:
            lm.model.load_state_dict(initial)
            with ctx.phase("pretrain"):
                log, status = pretrain(spec, lm, ctx, train_seed)
            ctx.state_use[f"pretrain.seed{train_seed}"] = status
            curves += [{**row, "train_seed": train_seed} for row in log]
        lm.model.eval()
        for prompt in spec.prompts:
            for seed in spec.seeds:
                for arm in spec.arms():
                    with ctx.phase(f"generation.{arm}"):
                        rows = trajectory(spec, lm, prompt, seed, arm, bar)
                    records += [{**row, "train_seed": train_seed} for row in rows] if train_seed is not None else rows
    bar.close()
    return RunOutput(records=records, curves=curves + routing_curves(records))


def routing_curves(records: list[dict]) -> list[dict]:
    """curves.csv rows for DVC plots: per (training seed, arm, chunk, MoE layer) the mean normalised routing entropy
    and mean top-1 expert usage over every trajectory's tokens (pressure itself is the analysis's definition)."""
    sums: dict[tuple, list[float]] = {}
    for r in records:
        for layer, (entropy, usage) in enumerate(zip(r["entropy"], r["usage"])):
            key = (r.get("train_seed"), r["arm"], r["chunk"], layer)
            total = sums.setdefault(key, [0.0, 0.0, 0])
            total[0] += entropy
            total[1] += max(usage)
            total[2] += 1
    rows = []
    for (train_seed, arm, chunk, layer), (entropy, usage, n) in sorted(sums.items(), key=lambda kv: (
            kv[0][0] if kv[0][0] is not None else -1, kv[0][1:])):
        row = {"run": "routing", "arm": arm, "chunk": chunk, "layer": layer, "entropy": round(entropy / n, 6),
               "top1_usage": round(usage / n, 6)}
        rows.append({**row, "train_seed": train_seed} if train_seed is not None else row)
    return rows
