"""Dry runs: a spec's own executor at the paper profile, with models built from their real architecture
configurations and random weights (nothing is downloaded), synthetic items and a bounded number of steps and
items. It measures peak memory (the CUDA allocator's peak on a GPU, the process's peak resident memory on the
CPU) and speed, and sets them beside `harness plan`'s estimate for the same bounded spec and for the shapes the
models actually saw. A dry run's numbers say whether a spec fits and how fast it goes; they are never results.

Two sizes: `real` (the published configuration: parameter counts equal models.yaml's `shape`) and `stand-in`
(the same architecture, layer count, vocabulary and expert count at a width of 64, so every paper spec's code
path runs on any machine in seconds).
"""

from __future__ import annotations

import functools
import json
from contextlib import contextmanager, nullcontext
import resource
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from harness.context import RunContext
from harness.data import SYNTHETIC_WORDS, synthetic_items
from harness.kinds.contract import Forward
from harness.models import ModelProvider
from harness.models.anatomy import find_anatomy
from harness.models.loading import LoadedModel, _quantize_in_memory
from harness.models.tiny import _set_rope_theta, tiny_tokenizer
from harness.plan import forward_bytes, gib, model_size, plan_spec, weight_bytes
from registry.catalog import dataset_entry, model_entry
from registry.errors import SpecError
from registry.yaml_io import parse_yaml

ARCHITECTURES = Path(__file__).resolve().parents[1] / "registry" / "catalog" / "architectures.yaml"
SIZES = ("real", "stand-in")
# The stand-in's widths; layers, vocabulary and experts stay as published.
STAND_IN = {"hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32, "num_attention_heads": 4,
            "head_dim": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 16}
# Synthetic items are padded to this many characters, which the byte-level stand-in tokenizer makes as many
# tokens: the length `harness plan` assumes for an item it has not read.
ITEM_TOKENS = 64


@dataclass(frozen=True)
class Architecture:
    name: str
    model_type: str
    config: dict
    parameter_gap: float = 0.0  # allowed relative difference from models.yaml's `shape.parameters`, stated there


@functools.cache
def architectures() -> dict[str, Architecture]:
    raw = parse_yaml(ARCHITECTURES.read_text(encoding="utf-8"), str(ARCHITECTURES))
    return {name: Architecture(name, entry["model_type"], dict(entry["config"]), float(entry.get("parameter_gap", 0.0)))
            for name, entry in raw["architectures"].items()}


def architecture(name: str) -> Architecture:
    found = architectures().get(name)
    if found is None:
        raise SpecError(f"model {name!r} has no architecture in {ARCHITECTURES.relative_to(ARCHITECTURES.parents[2])}, "
                        f"so a dry run cannot build it")
    return found


def build_config(name: str, size: str, tokenizer):
    """The transformers config of `name` at `size`, with the stand-in tokenizer's special token ids."""
    from transformers import AutoConfig

    arch = architecture(name)
    settings = dict(arch.config)
    if size == "stand-in":
        heads, kv_heads = settings.get("num_attention_heads", 4), settings.get("num_key_value_heads")
        settings.update({k: v for k, v in STAND_IN.items() if k in settings})
        if kv_heads is not None:  # keep grouped-query attention grouped
            settings["num_key_value_heads"] = max(1, STAND_IN["num_attention_heads"] * kv_heads // heads)
    rope_theta = settings.pop("rope_theta", None)
    settings.update(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id)
    config = AutoConfig.for_model(arch.model_type, **settings)
    if rope_theta is not None:
        _set_rope_theta(config, float(rope_theta))
    return config


def parameter_count(name: str, size: str = "real") -> int:
    return count_parameters(build_config(name, size, tiny_tokenizer()))


def count_parameters(config) -> int:
    """Parameters of a config's model, counted on the meta device (no memory; a quantised model's packed
    tensors would not count them right)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


@dataclass
class Shapes:
    """The largest input each model saw: rows x positions of one forward, and the positions attended."""

    parameters: int = 0
    build_seconds: float = 0.0
    dtype: str = "float32"
    quantization: str = "none"
    forwards: int = 0
    positions: int = 0  # token positions processed, all forwards together
    largest: dict = field(default_factory=lambda: {"batch": 0, "sequence": 0})


class RandomWeightsProvider(ModelProvider):
    """Builds each model from its architecture configuration with random weights, on the run's device, and
    counts the shapes of the forwards it makes."""

    def __init__(self, size: str, cache_dir: Path, device: torch.device):
        super().__init__("paper", cache_dir, device)
        self.size = size
        self.shapes: dict[str, Shapes] = {}
        self.memory: PeakMemory | None = None  # set while a dry run measures

    def get(self, name: str, dtype: str | None = None, quantization: str | None = None) -> LoadedModel:
        from transformers import AutoModelForCausalLM

        key = (name, dtype, quantization)
        if key in self._loaded:
            return self._loaded[key]
        entry = model_entry(name)
        source = entry.source("paper")
        torch_dtype = getattr(torch, dtype or source.dtype)
        quant = quantization or getattr(source, "quantization", "none")
        tokenizer = tiny_tokenizer()
        config = build_config(name, self.size, tokenizer)
        start = time.perf_counter()
        with self.memory.build() if self.memory else nullcontext():
            with torch.device(self.device if quant == "none" else "cpu"):
                model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
            if quant != "none":
                model = _quantize_in_memory(model, torch_dtype, self.device, quant)
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        self.shapes[name] = shapes = Shapes(count_parameters(config), time.perf_counter() - start,
                                            str(torch_dtype).replace("torch.", ""), quant)
        # the backbone: the kinds call it directly (hidden states, soft-token inputs) as well as through the LM
        model.base_model.register_forward_pre_hook(functools.partial(_count_shapes, shapes), with_kwargs=True)
        info = {"dry_run": self.size, "weights": "random", "tokenizer": "byte-level stand-in"}
        if quant != "none":
            info["quantization"] = quant
        loaded = LoadedModel(name, entry, source, model, tokenizer, find_anatomy(model), self.device, torch_dtype,
                             time.perf_counter() - start, info)
        self._loaded[key] = loaded
        self.provenance[name] = loaded.provenance()
        return loaded


def _count_shapes(shapes: Shapes, module, args, kwargs) -> None:
    tokens = kwargs.get("input_ids", args[0] if args else None)
    if tokens is None:
        tokens = kwargs.get("inputs_embeds")
    if tokens is None:
        return
    batch, new = tokens.shape[0], tokens.shape[1]
    mask = kwargs.get("attention_mask")
    attended = mask.shape[-1] if isinstance(mask, torch.Tensor) else new
    shapes.forwards += 1
    shapes.positions += batch * new
    if batch * attended > shapes.largest["batch"] * shapes.largest["sequence"]:
        shapes.largest = {"batch": int(batch), "sequence": int(attended)}


@dataclass
class DryRunContext(RunContext):
    """Items are synthetic, each padded to ITEM_TOKENS characters (bytes: as many stand-in tokens)."""

    def items(self, dataset: str, split: str, limit: int | None = None, seed: int | None = None) -> list[dict]:
        items = synthetic_items(dataset_entry(dataset), split, limit or 64, self.seed if seed is None else seed)
        return [_padded(item) for item in items]


def _padded(item: dict) -> dict:
    """Filler words before the item's text until it is ITEM_TOKENS characters long (its label word stays)."""
    key = "text" if "text" in item else "question"
    text, i = item[key], 0
    while len(text) < ITEM_TOKENS:
        text, i = f"{SYNTHETIC_WORDS[i % len(SYNTHETIC_WORDS)]} {text}", i + 1
    return {**item, key: text}


class PeakMemory:
    """Peak memory of a run, above what the process held at its start: the CUDA allocator's peak on a GPU; on the
    CPU the peak resident set (VmHWM, which writing 5 to /proc/self/clear_refs resets). Building random weights
    has transients a real load does not (a tied embedding initialised twice), so each model build is measured
    apart (`build_peak_bytes`), the memory each build leaves held is summed (`weights_bytes`: the weights, measured)
    and the run's peak (`peak_bytes`) is taken over the time between builds. On the CPU, measure in a fresh process
    (as `harness dry-run` does): memory the process freed earlier is reused without raising its resident set."""

    def __init__(self, device: torch.device):
        self.device = device
        self.baseline_bytes = self.peak_bytes = self.build_peak_bytes = 0.0
        self.built_bytes = 0.0  # memory the built models hold: their weights, measured
        self.resettable = True
        self.method = ("torch.cuda.max_memory_allocated" if device.type == "cuda" else
                       "peak resident set (VmHWM, reset around model builds)")

    def _current_peak(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return float(torch.cuda.max_memory_allocated(self.device)) - self.baseline_bytes
        return (_status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0) - self.baseline_bytes

    def _usage(self) -> float:
        if self.device.type == "cuda":
            return float(torch.cuda.memory_allocated(self.device))
        return _status_bytes("VmRSS")

    def _reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:  # the peak cannot be reset: it spans the whole process, builds included
            self.resettable = False
            self.method = "peak resident set over the process's life (ru_maxrss), builds included"

    def __enter__(self):
        self._reset()
        self.baseline_bytes = self._usage()
        return self

    @contextmanager
    def build(self):
        """Around a model build: the run's peak so far is kept, the build's own peak recorded apart."""
        self.peak_bytes = max(self.peak_bytes, self._current_peak())
        self._reset()
        before = self._usage()
        try:
            yield
        finally:
            self.built_bytes += self._usage() - before
            self.build_peak_bytes = max(self.build_peak_bytes, self._current_peak())
            self._reset()

    def __exit__(self, *exc):
        self.peak_bytes = max(self.peak_bytes, self._current_peak())
        return False


def _status_bytes(field_name: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.0


def bounded_overrides(spec, steps: int, items: int, tokens: int | None = None) -> list[str]:
    """The kind's `--set` overrides that bound a dry run to `steps` training steps, `items` items and (unless
    None) `tokens` generated tokens."""
    from harness import kinds

    planner = kinds.planner(spec.kind)
    if planner is None or not kinds.kind(spec.kind).dry_run_overrides:
        return []
    return list(planner.dry_run_overrides(spec, steps, items, tokens))


def dry_run(spec_path: Path, *, size: str, device: torch.device, steps: int, items: int, tokens: int | None = None,
            overrides: tuple[str, ...] = (), show_progress: bool = False) -> dict:
    """Run the spec's executor as described above; return the measurement (nothing is written)."""
    from harness import kinds
    from harness.engine import seed_everything
    from registry import load_spec

    if size not in SIZES:
        raise SpecError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    first = load_spec(spec_path, "paper", overrides)
    bound = tuple(overrides) + tuple(bounded_overrides(first, steps, items, tokens))
    spec = load_spec(spec_path, "paper", bound)
    for name in spec.model_names():
        architecture(name)
    plan = plan_spec(spec, "paper")
    executor = kinds.executor(spec.kind)
    with tempfile.TemporaryDirectory(prefix="dry-run-") as scratch:
        scratch = Path(scratch)
        provider = RandomWeightsProvider(size, scratch / "cache", device)
        ctx = DryRunContext(profile="paper", models=provider, device=device, seed=spec.seed, work_dir=scratch / "work",
                            state_dir=scratch / "state", cache_dir=scratch / "cache", show_progress=show_progress)
        for folder in (ctx.work_dir, ctx.state_dir, ctx.cache_dir):
            folder.mkdir(parents=True)
        seed_everything(spec.seed)
        start = time.perf_counter()
        with PeakMemory(device) as memory:
            provider.memory = memory
            output = executor.run(spec, ctx)
        wall = time.perf_counter() - start
    return _measurement(spec, size, device, bound, plan, provider, ctx, memory, wall, len(output.records))


def _measurement(spec, size, device, bound, plan, provider, ctx, memory, wall, n_records) -> dict:
    models = {}
    for name, shapes in provider.shapes.items():
        measured_size = replace(model_size(name, "paper", getattr(spec, "dtype", None),
                                           getattr(spec, "quantization", None)), parameters=shapes.parameters)
        largest = Forward("largest seen", name, max(1, shapes.largest["batch"]), max(1, shapes.largest["sequence"]))
        models[name] = {"parameters": measured_size.parameters, "build_seconds": round(shapes.build_seconds, 3),
                        "weight_bytes": round(weight_bytes(shapes.parameters, measured_size.vocab, measured_size.hidden,
                                                             shapes.dtype, shapes.quantization)),
                        "forwards": shapes.forwards, "positions": shapes.positions, "largest_forward": shapes.largest,
                        "planned_forward_bytes_at_largest": round(forward_bytes(measured_size, largest).bytes)}
    positions = sum(m["positions"] for m in models.values())
    training = {k: v for k, v in ctx.phase_seconds.items() if k.startswith("training")}
    trained = {}  # optimizer steps per second of each trained piece of state (e.g. "bridge.seed0")
    for state, use in ctx.state_use.items():
        seconds = ctx.phase_seconds.get(f"training.{state.split('.seed')[0]}")
        steps = use.get("steps") if isinstance(use, dict) else None
        if seconds and steps:
            trained[state] = {"steps": steps, "seconds": seconds, "steps_per_second": round(steps / seconds, 3)}
    return {
        "spec": spec.name, "kind": spec.kind, "size": size, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(), "overrides": list(bound),
        "wall_seconds": round(wall, 3), "phases": ctx.phase_seconds, "records": n_records,
        "measured": {"peak_bytes": round(memory.peak_bytes), "peak": gib(memory.peak_bytes),
                     "build_peak_bytes": round(memory.build_peak_bytes), "weights_bytes": round(memory.built_bytes),
                     "baseline_bytes": round(memory.baseline_bytes), "method": memory.method,
                     "positions_per_second": round(positions / wall, 1) if wall else None,
                     "training_seconds": round(sum(training.values()), 3), "trained": trained},
        "planned": {"peak_bytes": round(plan.total_bytes), "peak": gib(plan.total_bytes),
                    "weights_bytes": round(sum(s.weight_bytes for s in plan.sizes.values())),
                    "positions": plan.workload.tokens, "one_at_a_time": plan.workload.one_at_a_time,
                    "note": "for the published sizes; a stand-in's weights are far smaller" if size == "stand-in" else ""},
        "models": models,
    }


def describe(result: dict) -> list[str]:
    m, p = result["measured"], result["planned"]
    lines = [f"{result['spec']} dry run ({result['size']}, {result['device']}"
             f"{', ' + result['gpu'] if result['gpu'] else ''}): {result['wall_seconds']:.1f} s, "
             f"{result['records']} records; measured peak {m['peak']}, planned peak {p['peak']}"
             f"{' (published sizes)' if result['size'] == 'stand-in' else ''}"]
    for name, info in result["models"].items():
        lines.append(f"  {name}: {info['parameters']:,} parameters, built in {info['build_seconds']:.1f} s; "
                     f"{info['forwards']} forwards, {info['positions']:,} positions, largest "
                     f"{info['largest_forward']['batch']} x {info['largest_forward']['sequence']}")
    for state, t in m["trained"].items():
        lines.append(f"  {state}: {t['steps']} steps in {t['seconds']:.1f} s ({t['steps_per_second']:.2f} steps/s, "
                     f"including its quick evaluations)")
    lines.append(f"  {m['positions_per_second']:,} positions per second over the whole run")
    return lines


def write(result: dict, out_dir: Path) -> Path:
    """One JSON file per spec, size and device under `out_dir` (never results/)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    device = result["device"].split(":")[0]
    path = out_dir / f"{result['spec']}.{result['size']}.{device}.json"
    from harness.fsutil import write_json

    write_json(path, result)
    return path


def to_json(result: dict) -> str:
    return json.dumps(result, indent=1, sort_keys=True)


def summary_table(folder: Path) -> str:
    """Markdown: one row per dry run written under `folder`, measured peak beside the plan's."""
    rows = ["| spec | size | device | measured peak | planned peak (for the run's shapes) | planned peak (spec) "
            "| trained steps/s | positions/s |", "|---|---|---|---|---|---|---|---|"]
    for path in sorted(Path(folder).rglob("*.json")):
        r = json.loads(path.read_text())
        if "measured" not in r:
            continue
        at_shapes = _planned_at_shapes(r)
        rate = ", ".join(f"{k} {v['steps_per_second']:.2f}" for k, v in r["measured"]["trained"].items()) or "-"
        rows.append(f"| {r['spec']} | {r['size']} | {r['gpu'] or r['device']} | {r['measured']['peak']} | "
                    f"{gib(at_shapes) if at_shapes else '-'} | {r['planned']['peak']} | {rate} | "
                    f"{r['measured']['positions_per_second']:,} |")
    return "\n".join(rows) + "\n"


def _planned_at_shapes(result: dict) -> float | None:
    """The plan's memory model at the shapes the run made (real size only): the weights of the models held
    together (one at a time where the kind loads them in turn) plus the largest forward seen."""
    if result["size"] != "real" or not result["models"]:
        return None
    models = result["models"]
    def weights(name):
        return models[name].get("weight_bytes", 0)
    per_model = [weights(n) + m["planned_forward_bytes_at_largest"] for n, m in models.items()]
    if result["planned"]["one_at_a_time"]:
        return max(per_model)
    return sum(weights(n) for n in models) + max(m["planned_forward_bytes_at_largest"] for m in models.values())


# How close the plan must come to a real-size dry run on the CPU: the weights within 5% plus 0.15 GiB, the peak
# within 10% plus 0.25 GiB. The fixed parts are what the plan leaves out on purpose: the model code imported at
# the first build and the allocator's retained blocks (about 0.1 GiB measured at 270 M parameters, in float32 and
# bfloat16 alike), and on top of it at the peak the libraries' workspaces and sampling buffers.
WEIGHTS_TOLERANCE = (0.05, 0.15 * 2**30)
PEAK_TOLERANCE = (0.10, 0.25 * 2**30)


def plan_agreement(result: dict) -> dict:
    """A real-size dry run's measured weights and peak against the plan's (at the shapes the run made)."""
    measured, planned = result["measured"], result["planned"]
    at_shapes = _planned_at_shapes(result)

    def within(got, want, tolerance):
        return abs(got - want) <= tolerance[0] * want + tolerance[1]

    return {"weights_measured": gib(measured["weights_bytes"]), "weights_planned": gib(planned["weights_bytes"]),
            "weights_ratio": round(measured["weights_bytes"] / planned["weights_bytes"], 3),
            "peak_measured": gib(measured["peak_bytes"]), "peak_planned_at_shapes": gib(at_shapes),
            "peak_ratio": round(measured["peak_bytes"] / at_shapes, 3), "build_peak": gib(measured["build_peak_bytes"]),
            "within_tolerance": within(measured["weights_bytes"], planned["weights_bytes"], WEIGHTS_TOLERANCE)
            and within(measured["peak_bytes"], at_shapes, PEAK_TOLERANCE)}
