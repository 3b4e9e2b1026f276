"""summary.md of a demo, built from the runs' own logs (metrics.eval.jsonl and config.yaml), never from numbers held
in memory: what the table shows is what the logs say."""

from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from apps.plots.runs import read_metrics, tokens_per_step
from lingua.args import load_yaml, write_atomic

# the claim the demo makes, at the last checkpoint: LlamaCanon learns the task and Llama of the same size and budget
# gets at most half as far
CANON_AT_LEAST, BASELINE_AT_MOST = 0.8, 0.5


@dataclass
class HfCheck:
    """The exported LlamaCanon's greedy answers to every query of a test file, beside the lingua checkpoint's
    logged accuracy on the same queries."""

    hf_dir: Path
    seed: int
    test_file: Path
    records: int
    step: int
    correct: int
    total: int
    logged: float
    examples: list[dict]  # expected / generated / prompt_tail (generator ids), prompt_dense / generated_dense (trained)


def check_agreement(check: HfCheck) -> None:
    """Both sides count an answer right when greedy decoding reproduces all of it, so the counts must be equal;
    anything else means the export or the evaluation is wrong."""
    if check.correct / check.total != check.logged:
        raise ValueError(
            f"the Hugging Face export answers {check.correct} / {check.total} = {check.correct / check.total:.4f} "
            f"of the queries in {check.test_file} right, but the lingua checkpoint of step {check.step} logged "
            f"accuracy {check.logged:.4f}; expected the same count"
        )


def read_accuracy(dump_dir: Path, task: str) -> dict[int, float]:
    """global_step -> the task's answer accuracy in dump_dir/metrics.eval.jsonl (a step evaluated twice: the last)."""
    return {line["global_step"]: line[task]["acc,none"] for line in read_metrics(dump_dir / "metrics.eval.jsonl")}


def spread(values: list[float]) -> str:
    """One seed: its value; several: mean (min–max)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{mean(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def accuracy_table(accuracy: dict[str, dict[int, dict[int, float]]]) -> list[str]:
    """`accuracy[model][seed][step]`: one row per checkpoint step, one column per model."""
    models = list(accuracy)
    steps = sorted({step for model in models for per_step in accuracy[model].values() for step in per_step})
    several = len(next(iter(accuracy.values()))) > 1
    header = [f"{model} mean (min–max)" if several else model for model in models]
    lines = ["| step | " + " | ".join(header) + " |", "|---" * (len(models) + 1) + "|"]
    for step in steps:
        cells = [spread([per_step[step] for per_step in accuracy[model].values()]) for model in models]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return lines


def verdict(accuracy: dict[str, dict[int, dict[int, float]]], baseline: str, canon: str) -> list[str]:
    """Whether each seed's last checkpoint shows the claim, one line per seed and one overall."""
    lines, held = [], 0
    for seed, per_step in accuracy[canon].items():
        step = max(per_step)
        ours, theirs = per_step[step], accuracy[baseline][seed][step]
        ok = ours >= CANON_AT_LEAST and theirs <= BASELINE_AT_MOST * ours
        held += ok
        answer = "yes" if ok else "no"
        lines.append(f"- seed {seed}, step {step}: {canon} {ours:.3f}, {baseline} {theirs:.3f} — {answer}")
    total = len(accuracy[canon])
    claim = f"{canon} >= {CANON_AT_LEAST} and {baseline} <= {BASELINE_AT_MOST:g} x {canon} at the last checkpoint"
    return [f"Canon's effect ({claim}) holds for {held} of {total} seeds:", "", *lines]


def hf_section(check: HfCheck) -> list[str]:
    share = check.correct / check.total
    return [
        "## The Hugging Face export",
        "",
        f"LlamaCanon of seed {check.seed} (step {check.step}) exported to {check.hf_dir}, loaded with "
        "AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True), answering every query of "
        f"{check.test_file.name} ({check.total} queries of {check.records} test samples) by greedy generate() from the "
        "true prefix:",
        "",
        f"HF export answers {check.correct} / {check.total} right ({100 * share:.1f}%); the lingua checkpoint logged "
        f"accuracy {check.logged:.3f} on the same queries — they agree.",
        "",
        "A few of its answers in the generator's ids (9000 + k asks for the word k hops on, 9500 marks the answer):",
        "",
        *[
            f"- expected {e['expected']}, generated {e['generated']}; the prompt ends … "
            + " ".join(map(str, e["prompt_tail"]))
            for e in check.examples
        ],
    ]


def write_summary(
    path: Path, title: str, task: str, runs: dict[str, dict[int, Path]], context: list[str], check: HfCheck
) -> None:
    """`runs[model][seed]` is a run's dump dir; `context` says what the task is."""
    accuracy = {model: {seed: read_accuracy(d, task) for seed, d in seeds.items()} for model, seeds in runs.items()}
    first = next(iter(next(iter(runs.values())).values()))
    config_path = first / "config.yaml"
    config = load_yaml(str(config_path))
    step_tokens = tokens_per_step(config, config_path)
    seeds = list(next(iter(runs.values())))
    baseline, canon = list(runs)
    per_seed = []
    if len(seeds) > 1:
        per_seed = ["Each seed's accuracy (step: value):", ""]
        for model, by_seed in accuracy.items():
            for seed, per_step in by_seed.items():
                values = ", ".join(f"{step}: {value:.3f}" for step, value in sorted(per_step.items()))
                per_seed.append(f"- {model} seed {seed} — {values}")
        per_seed.append("")
    lines = [
        f"# {title}",
        "",
        *context,
        "",
        f"Answer accuracy at every checkpoint (seeds {', '.join(map(str, seeds))}"
        + ("; mean over the seeds and their min–max" if len(seeds) > 1 else "")
        + f"); one step trains on {step_tokens:,} tokens ({config['data']['batch_size']} sequences of "
        f"{config['data']['seq_len']}), so step s has seen s x {step_tokens:,} tokens:",
        "",
        *accuracy_table(accuracy),
        "",
        *per_seed,
        *verdict(accuracy, baseline, canon),
        "",
        *hf_section(check),
    ]
    write_atomic(str(path), "\n".join(lines) + "\n")
