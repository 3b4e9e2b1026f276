"""What Canon layers cost in the trainer: the training step of `apps.main` (Llama vs LlamaCanon-ABCD) or `apps.gla`
(GLA5 with its short convs "bb" vs Canon "AbbCD"), eager and under torch.compile, side by side in one process.

Each competitor is built the way lingua.training builds it (meta device, `parallelize_model` with the config's
distributed section, so `compile: true` is the trainer's own `model.compile()`, `to_empty`, `init_weights`,
`build_optimizer`) and fed by the trainer's data loader (debug.yaml's data path, bytes tokenizer, over a generated
text source). A step is what the training loop does: forward with loss, backward, gradient clipping, optimizer and
scheduler step. Competitors run interleaved, one step each per round with the order flipped every round, and the
median step time per competitor gives the ratios ours / baseline (the machine is shared: medians of interleaved
steps are what stays comparable).

--kernels prints the proof that the compiled Canon sites fuse: the kernels inductor generates for one block's
forward and backward, without Canon, with Canon as canon.py runs it under compile (the shifted formulation), and
with Canon forced onto the eager chunked Functions (what compile had to work around before).

Usage (from the repository root):
    .venv/bin/python benchmarks/trainer_canon.py [--family main|gla] [--shapes 256,512,1024] [--rounds 7]
    .venv/bin/python benchmarks/trainer_canon.py --kernels
    .venv/bin/python benchmarks/trainer_canon.py --device cuda --dtype bf16 --modes compiled   # on a GPU
"""

import argparse
import gc
import re
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LINGUA = ROOT / "lingua_modified"
sys.path[:0] = [str(LINGUA), str(ROOT)]  # this checkout's packages (apps.gla imports huggingface_linear)

from trainer import write_data  # noqa: E402  (benchmarks/trainer.py, beside this script)

from lingua import canon  # noqa: E402
from lingua.args import cli_overrides, dataclass_from_dict, load_yaml, merge_sources  # noqa: E402
from lingua.data import build_dataloader_from_args, init_dataloader_state_from_args  # noqa: E402
from lingua.distributed import parallelize_model  # noqa: E402
from lingua.optim import build_optimizer  # noqa: E402

# name -> (model overrides, seq_len, batch_size, vocab_size or None for the bytes tokenizer's 258)
SHAPES = {
    "256": (["model.dim=256", "model.n_layers=4", "model.n_heads=8"], 256, 8, None),
    "512": (["model.dim=512", "model.n_layers=4", "model.n_heads=8"], 512, 4, None),
    "1024": (["model.dim=1024", "model.n_layers=4", "model.n_heads=16"], 512, 2, 32000),
}
# family -> (config, (baseline canon_set, ours canon_set), names)
FAMILIES = {
    "main": ("apps/main/configs/debug.yaml", ("", "ABCD"), ("Llama", "LlamaCanon-ABCD")),
    "gla": ("apps/gla/configs/gla5_debug.yaml", ("bb", "AbbCD"), ("GLA5-bb", "GLA5-AbbCD")),
}
# CPU targets of the project's issue (ours / baseline); on a GPU the table reads the same way
TARGETS = {("main", "eager", "512"): 1.15, ("main", "compiled", "512"): 1.10, ("main", "compiled", "1024"): 1.05,
           ("gla", "compiled", "1024"): 1.05}  # fmt: skip


def family_modules(family: str):
    if family == "main":
        from apps.main import train
    else:
        from apps.gla import train
    return train.TrainArgs, train.MODEL


@dataclass
class Competitor:
    name: str
    model: torch.nn.Module
    optimizer: object
    scheduler: object
    batches: object
    clip: float
    device: str
    times: list = field(default_factory=list)
    peak_bytes: int = 0

    def step(self) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        tokens, mask, _ = next(self.batches)
        inputs = torch.from_numpy(tokens[..., 0]).to(self.device)
        targets = torch.from_numpy(tokens[..., 1]).to(self.device)
        loss_mask = None if mask[..., 1].all() else torch.from_numpy(mask[..., 1].copy()).to(self.device)
        loss = self.model(inputs, targets, loss_mask=loss_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.clip, foreach=True)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        return time.perf_counter() - start


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build(stack: ExitStack, family, shape, canon_set, compiled, device, dtype, data_root, name) -> Competitor:
    """One competitor, built as lingua.training builds its model, optimizer and data loader."""
    train_args_class, spec = family_modules(family)
    config, _, _ = FAMILIES[family]
    model_overrides, seq_len, batch_size, vocab = SHAPES[shape]
    overrides = [*model_overrides, f"data.root_dir={data_root}",
                 f"data.seq_len={seq_len}", f"data.batch_size={batch_size}", "data.load_async=false",
                 f"distributed.compile={str(compiled).lower()}", f"distributed.model_dtype={dtype}",
                 "distributed.compile_cache_size_limit=64", "steps=100000"]  # fmt: skip
    if family == "main":
        overrides.append("model.rope_dim=16")
    _, parsed = cli_overrides(overrides)
    args = dataclass_from_dict(train_args_class, merge_sources(load_yaml(str(LINGUA / config)), parsed))
    args.model.vocab_size, args.model.max_seqlen = vocab or 258, seq_len
    args.model.canon_set = canon_set  # set here: an empty value does not survive the command-line syntax
    torch.manual_seed(args.seed)
    with torch.device("meta"):
        model = spec.build(args.model)
    model = parallelize_model(model, None, args.distributed, spec.fsdp_grouping_plan(args.model), spec.no_recompute_ops)
    model.to_empty(device=device)
    torch.manual_seed(args.model.seed)
    model.init_weights()
    model.train()
    optimizer, scheduler = build_optimizer(model, args.optim, args.steps)
    batches = stack.enter_context(
        build_dataloader_from_args(args.data, init_dataloader_state_from_args(args.data, 0, 1))
    )
    return Competitor(name, model, optimizer, scheduler, batches, args.optim.clip, device)


def peak_memory(competitor: Competitor) -> int:
    """Peak bytes of one step on top of what exists before it (GPU allocator statistics; CPU: the dispatch-level
    tracker of hf_llamacanon.py, eager only, since a dispatch mode does not see inside compiled graphs)."""
    if competitor.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        competitor.step()
        return torch.cuda.max_memory_allocated() - before
    from hf_llamacanon import PeakMemoryTracker

    with PeakMemoryTracker() as tracker:
        competitor.step()
    return tracker.peak


def measure(family, shape, modes, rounds, warmup, device, dtype, data_root, memory) -> list[tuple]:
    base_set, ours_set = FAMILIES[family][1]
    base_name, ours_name = FAMILIES[family][2]
    rows = []
    with ExitStack() as stack:
        competitors = {}
        for mode in modes:
            for name, canon_set in ((base_name, base_set), (ours_name, ours_set)):
                competitors[(mode, name)] = build(
                    stack, family, shape, canon_set, mode == "compiled", device, dtype, data_root, name
                )
        order = list(competitors.values())
        for c in order:  # compilation and first-step allocations happen here
            for _ in range(warmup):
                c.step()
        for r in range(rounds):
            for c in order if r % 2 == 0 else reversed(order):
                c.times.append(c.step())
        if memory:
            for (mode, _), c in competitors.items():
                if device == "cuda" or mode == "eager":
                    gc.collect()
                    c.peak_bytes = peak_memory(c)
        for mode in modes:
            base, ours = competitors[(mode, base_name)], competitors[(mode, ours_name)]
            t_base, t_ours = statistics.median(base.times), statistics.median(ours.times)
            mem = ours.peak_bytes / base.peak_bytes if base.peak_bytes and ours.peak_bytes else None
            rows.append((family, shape, mode, t_ours, t_base, t_ours / t_base, mem, TARGETS.get((family, mode, shape))))
        del competitors, order
    gc.collect()
    return rows


def print_table(rows, device, dtype) -> None:
    print(f"\ntrainer step, {device} {dtype}, torch {torch.__version__}: median seconds of interleaved steps")
    header = (
        f"{'family':<7}{'shape':>6}{'mode':>10}{'ours s':>9}{'base s':>9}{'ratio':>8}{'memory':>8}{'target':>9}  result"
    )
    print(header)
    print("-" * len(header))
    for family, shape, mode, t_ours, t_base, ratio, mem, target in rows:
        result = "" if target is None else ("PASS" if ratio <= target else "FAIL")
        mem_text = "-" if mem is None else f"{mem:.3f}"
        target_text = "-" if target is None else f"<= {target:.2f}"
        print(f"{family:<7}{shape:>6}{mode:>10}{t_ours:>9.3f}{t_base:>9.3f}{ratio:>8.3f}{mem_text:>8}{target_text:>9}  "
              f"{result}")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# The fusion proof: kernels inductor generates for one block
# ----------------------------------------------------------------------------------------------------------------

KERNEL_DEF = re.compile(r"\b((?:cpp|triton)_\w+?_\d+)\b")
LIBRARY_CALL = re.compile(r"\bextern_kernels\.\w+\(|\btorch\.ops\.\w+\.\w+\.\w+\(")  # aten and custom ops


def block_kernels(canon_set: str, opaque: bool, dim=256, seq_len=64, device="cpu") -> tuple[int, int, int, int]:
    """(generated kernels forward, backward, library calls forward, backward) of one compiled TransformerBlock;
    with `opaque` the Canon sites run canon.py's eager Functions inside the compiled graph."""
    from torch._inductor.utils import run_and_get_code

    from apps.main.transformer import LMTransformerArgs
    from lingua.transformer import RotaryEmbedding, TransformerBlock

    args = LMTransformerArgs(dim=dim, n_layers=1, n_heads=8, qk_norm=True, rope_dim=16, canon_set=canon_set)
    torch.manual_seed(0)
    block = TransformerBlock(args).to(device)
    rope = RotaryEmbedding(args.rope_theta, 16)(torch.arange(seq_len, device=device))
    x = torch.randn(2, seq_len, dim, device=device, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(block)
    real = canon._compiling
    if opaque:
        canon._compiling = lambda: False
    try:
        _, codes = run_and_get_code(lambda: compiled(x, rope).sum().backward())
    finally:
        canon._compiling = real
    kernels = [len(set(KERNEL_DEF.findall(code))) for code in codes]
    calls = [len(LIBRARY_CALL.findall(code)) for code in codes]
    # forward graphs come first, then backward graphs; with graph breaks there are several of each
    half = len(codes) // 2
    return sum(kernels[:half]), sum(kernels[half:]), sum(calls[:half]), sum(calls[half:])


def print_kernels(device: str) -> None:
    print(f"\none TransformerBlock (dim 256, qk_norm, T=64) under torch.compile on {device}: inductor's output")
    header = f"{'variant':<44}{'fused fwd':>10}{'fused bwd':>10}{'calls fwd':>10}{'calls bwd':>10}"
    print(header)
    print("-" * len(header))
    for label, canon_set, opaque in (
        ("Llama (no Canon)", "", False),
        ("LlamaCanon-ABCD, shifted formulation (ours)", "ABCD", False),
        ("LlamaCanon-ABCD, eager Functions in the graph", "ABCD", True),
    ):
        fwd, bwd, calls_fwd, calls_bwd = block_kernels(canon_set, opaque, device=device)
        print(f"{label:<44}{fwd:>10}{bwd:>10}{calls_fwd:>10}{calls_bwd:>10}")
    print("fused = kernels inductor generated (loops over their tensors); calls = library kernels (GEMMs, attention,")
    print("convolutions), aten fallbacks and custom ops, each at least one more pass over its tensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), nargs="+", default=["main"])
    parser.add_argument("--shapes", default="256,512,1024", help=f"comma-separated, of {sorted(SHAPES)}")
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one: this machine is shared)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory step")
    parser.add_argument("--kernels", action="store_true", help="only print the kernel counts of one compiled block")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # hf_llamacanon's memory tracker
    if args.kernels:
        print_kernels(args.device)
        return
    shapes = args.shapes.split(",")
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown:
        parser.error(f"--shapes {unknown}: expected some of {sorted(SHAPES)}")
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "data"
        write_data(root, documents=4000, max_words=400)
        for family in args.family:
            for shape in shapes:
                rows += measure(family, shape, args.modes.split(","), args.rounds, args.warmup, args.device,
                                args.dtype, root, not args.no_memory)  # fmt: skip
                print_table(rows[-len(args.modes.split(",")) :], args.device, args.dtype)
    print_table(rows, args.device, args.dtype)


if __name__ == "__main__":
    main()
