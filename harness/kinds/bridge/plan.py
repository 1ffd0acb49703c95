"""The bridge's workload: sender and receiver loaded together; training backpropagates through the
frozen receiver; the longest forward is a few-shot prompt (instruction, label list, demonstrations)."""

from __future__ import annotations

import torch

from harness.kinds.bridge.flow import DiTDenoiser
from harness.kinds.bridge.modules import LatentBridge
from harness.kinds.contract import Forward, Workload
from harness.plan import estimated_tokens, model_size
from registry.kinds.bridge import SEEDED_METHODS, BridgeSpec

# Without the data, an item is assumed this long (short-text classification; the passkey and GSM8K
# specs' items are longer, and their spec pages say so through this note).
TYPICAL_ITEM_TOKENS = 64


def trainable_parameters(spec: BridgeSpec, profile: str) -> int:
    """The bridge's parameters (with the heads its auxiliary losses train), counted on the meta device."""
    sender, receiver = model_size(spec.sender, profile), model_size(spec.receiver, profile)
    arch, losses = spec.bridge, spec.training.losses
    with torch.device("meta"):
        if arch.flow is not None:
            flow = arch.flow
            module = DiTDenoiser(flow.latents, receiver.hidden, sender.hidden, flow.width, flow.depth, flow.heads,
                                 flow.condition)
        else:
            colour = (torch.zeros(receiver.hidden), torch.ones(receiver.hidden)) if arch.normalizer.recolour else None
            module = LatentBridge(arch, sender.hidden, receiver.hidden, torch.zeros(sender.hidden),
                                  torch.ones(sender.hidden), 1.0, colour)
    count = sum(p.numel() for p in module.parameters() if p.requires_grad)
    if losses.reconstruction_head:
        count += (receiver.hidden + 1) * sender.hidden
    if losses.bag_of_words:
        count += (receiver.hidden + 1) * sender.vocab
    return count


def workload(spec: BridgeSpec, profile: str) -> Workload:
    task, ev, tr = spec.task, spec.evaluation, spec.training
    labels = " ".join(spec.task.label_names())
    item = TYPICAL_ITEM_TOKENS + estimated_tokens(task.item_template)
    instruction = estimated_tokens(task.instruction + labels) if task.instruction or labels else 0
    few_shot = ev.few_shot * (item + 8) if {"sender_few_shot", "receiver_few_shot"} & set(ev.methods) else 0
    soft = spec.bridge.soft_tokens * spec.bridge.recurrent_steps
    bridged = soft + estimated_tokens(task.primer + task.prompt)
    answer = task.max_new_tokens
    text = instruction + few_shot + item + answer
    forwards = [Forward("sender states", spec.sender, 16, item),
                Forward("training", spec.receiver, tr.batch_size, max(bridged, item + soft) + answer, trains=True),
                Forward("evaluation", spec.receiver, ev.batch_size, max(bridged + answer, text))]
    if {"sender_text", "sender_few_shot", "text_relay"} & set(ev.methods):
        relay = estimated_tokens(task.relay_template) + item + task.relay_max_tokens
        forwards.append(Forward("evaluation", spec.sender, ev.batch_size, max(text, relay)))
    seeds = len(spec.training_seeds())
    train_tokens = tr.steps * tr.batch_size * (bridged + answer) * seeds
    if "prompt_tuning" in ev.methods:
        train_tokens += spec.prompt_tuning_steps() * tr.batch_size * (item + soft + answer) * seeds
    methods = sum(seeds if m in SEEDED_METHODS else 1 for m in ev.methods if m != "random")
    tokens = train_tokens + methods * task.eval_items * (item + answer) + task.eval_items * item * 2
    return Workload(models=[spec.sender, spec.receiver], forwards=forwards, tokens=tokens,
                    trainable_parameters=trainable_parameters(spec, profile),
                    notes=[f"items assumed {TYPICAL_ITEM_TOKENS} tokens long (no data is read to plan)"])


def dry_run_overrides(spec: BridgeSpec, steps: int, items: int, tokens: int | None) -> list[str]:
    """A dry run (harness/dryrun.py) at the spec's batch sizes: `steps` training steps of one seed for the bridge
    and prompt tuning, `items` items wherever items are drawn, and at most `tokens` generated tokens."""
    tr = spec.training
    out = [f"training.steps={steps}", f"training.seeds=[{spec.training_seeds()[0]}]",
           f"training.warmup_steps={min(tr.warmup_steps, steps // 2)}", f"training.quick_eval_every={steps}",
           f"training.quick_eval_items={min(items, tr.quick_eval_items)}", f"training.checkpoint_every={steps}",
           f"task.train_items={steps * tr.batch_size}", f"task.eval_items={items}", f"task.dev_items={items}",
           f"bridge.normalizer.calibration_items={items}"]
    if "prompt_tuning" in spec.evaluation.methods:
        out.append(f"evaluation.prompt_tuning.steps={steps}")
    if spec.task.continuation is not None:
        out.append(f"task.continuation.items={items}")
    if tokens is not None:
        out += [f"task.max_new_tokens={min(tokens, spec.task.max_new_tokens)}",
                f"task.relay_max_tokens={min(tokens, spec.task.relay_max_tokens)}"]
    return out
