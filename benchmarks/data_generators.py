"""Samples per second of our generators against the reference's measured single-process rates (the reference: the
original PhysicsLM4 data code, measured once; its rates are the constants below), and the speed-up of
`write_dataset` with 2 worker processes. Ratios are ours / reference (upper end of the reference's measured range,
so the ratio is a lower bound); target >= 3 in one process. Then Lano's CYK verification of the longest cfg3j/cfg3k
strings, time and peak memory in a fresh process, against the reference's 57 s / 3.4 GB for one 625-token cfg3k
string; target <= 1 s and <= 300 MB.

    python benchmarks/data_generators.py [--seconds 1.0]
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time

from data_synthetic_pretrain import derive, load_grammar, make_sample, write_dataset
from data_synthetic_pretrain.capo_permute import permute_biography

# (generator, preset, split): reference samples/s, upper end of the reference's measured range
REFERENCE_RATES = {
    ("depo", "depo1-375", "train"): 660,
    ("depo", "depo1-375", "test"): 600,
    ("depo", "depo1-225", "train"): 1130,
    ("depo", "depo1-225", "test"): 1050,
    ("depo", "depo2-125", "train"): 2830,
    ("depo", "depo2-125", "test"): 1290,
    ("depo", "depo2-75", "train"): 3400,
    ("depo", "depo2-75", "test"): 1930,
    ("brevo", "brevo1-110", "train"): 2500,
    ("brevo", "brevo1-90", "train"): 2900,
    ("brevo", "brevo1-70", "train"): 4400,
    ("brevo", "brevo2-50", "train"): 4100,
    ("brevo", "brevo2-40", "train"): 4900,
    ("brevo", "brevo2-30", "train"): 4700,
    ("mano", "mano-10", "train"): 42000,
    ("mano", "mano-13", "train"): 30000,
    ("mano", "mano-16", "train"): 20000,
    ("mano", "mano-10", "test"): 24000,
    ("mano", "mano-13", "test"): 14000,
    ("mano", "mano-16", "test"): 11000,
    ("capo", "bioS-single-N100k", "train"): 40000,
    ("capo", "bioS-multi5-permute-N100k", "train"): 16000,
    ("capo", "bioS-multi5-permute-reverse-md-N100k", "train"): 16000,
    ("capo", "bioS-single-reverse-md-N100k", "train"): 40000,
    ("capo", "bioR0-single-N100k", "train"): 34000,
    **{("lano", cfg, "train"): rate for cfg, rate in [("cfg3b", 1200), ("cfg3e1", 1600), ("cfg3e2", 900),
       ("cfg3f", 1000), ("cfg3g", 1300), ("cfg3h", 1500), ("cfg3i", 1000), ("cfg3j", 500), ("cfg3k", 460)]},
}  # fmt: skip
# (generator, preset, samples) for the --workers 2 speed-up of write_dataset
WRITE_SETTINGS = [
    ("depo", "depo1-375", 3000),
    ("capo", "bioS-multi5-permute-N100k", 100000),
    ("lano", "cfg3k", 30000),
]
# one Lano verification in a fresh interpreter: CPU seconds and peak memory (maxrss growth, and numpy's allocations as
# seen by tracemalloc) of the call alone
VERIFY_SCRIPT = """
import json, resource, sys, time, tracemalloc
from data_synthetic_pretrain.lano_dp import is_member
string = json.loads(sys.argv[2])
is_member(sys.argv[1], string[:40])  # imports, config, BLAS set-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
start = time.process_time()
member = is_member(sys.argv[1], string)
seconds = time.process_time() - start
traced = tracemalloc.get_traced_memory()[1]
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps([member, seconds, max(grown * 1024, traced)]))
"""
REFERENCE_VERIFY = (625, 57.0, 3.4e9)  # cfg3k string length, seconds, bytes, as measured for the reference


def rate(generator, preset, split, seconds):
    """Samples per CPU second of this process (CPU time, so other work on a shared machine does not count)."""
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for index in range(count, count + 16):
            make_sample(generator, preset, split, seed=0, index=index)
        count += 16
    return count / (time.process_time() - start)


def augmenter_rate(seconds):
    """bioS single biographies, each permuted by the free-text augmenter (capo-permute), per CPU second: the
    reference's "bioS + permutation" (its augmenter applied to its bioS writer)."""
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for index in range(count, count + 16):
            record = make_sample("capo", "bioS-single-N100k", "train", seed=0, index=index)
            first, middle, last = record["meta"]["name"].split(" ")
            permute_biography(record["text"], first, middle, last, key=index)
        count += 16
    return count / (time.process_time() - start)


class WhitespaceTokenizer:
    """The trivial tokenizer of the reference's multi-hop measurement."""

    def encode(self, text, add_special_tokens=False):
        return text.split()


# (setting, context): the reference's multi-hop prompts/s with a trivial tokenizer (upper end of its measured range)
MULTIHOP_RATES = {("paper", "0k"): 20000, ("paper", "1k"): 6500, ("ours", "0k"): 20000, ("ours", "1k"): 6500}
BABILONG_RATE = 137000  # reference prompt formatting per second


def multihop_rate(setting, context, seconds):
    """1-hop prompts per CPU second, after every corpus sentence has been tokenized once (as in the reference, whose
    constructor tokenizes the whole corpus)."""
    from data_reallife_eval.background import default_sentences
    from data_reallife_eval.multihop import MultihopBuilder

    builder = MultihopBuilder(WhitespaceTokenizer(), default_sentences(), setting=setting)
    for i in range(len(builder.sentences)):
        builder._sentence_tokens(i)
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for index in range(count, count + 64):  # paper: continues the setting's one stream
            builder.sample(1, context, index)
        count += 64
    return count / (time.process_time() - start)


def babilong_rate(seconds):
    from data_reallife_eval.babilong import babilong_prompt

    context, count, start = "Mary went to the office. " * 40, 0, time.process_time()
    while time.process_time() - start < seconds:
        for _ in range(64):
            babilong_prompt("qa1", context, "Where is Mary?")
        count += 64
    return count / (time.process_time() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per generator setting")
    args = parser.parse_args()
    print(f"{'generator':10}{'preset':38}{'split':7}{'ours/s':>10}{'ref/s':>9}{'ratio':>8}  target >= 3")
    for (generator, preset, split), reference in REFERENCE_RATES.items():
        ours = rate(generator, preset, split, args.seconds)
        verdict = "PASS" if ours / reference >= 3 else "FAIL"
        print(f"{generator:10}{preset:38}{split:7}{ours:10.0f}{reference:9d}{ours / reference:8.2f}  {verdict}")
    ours, reference = augmenter_rate(args.seconds), 16000
    verdict = "PASS" if ours / reference >= 3 else "FAIL"
    print(f"{'capo':10}{'bioS-single + capo-permute':38}{'train':7}{ours:10.0f}{reference:9d}{ours / reference:8.2f}  "
          f"{verdict}")  # fmt: skip
    for (setting, context), reference in MULTIHOP_RATES.items():
        ours = multihop_rate(setting, context, args.seconds)
        # the "ours" setting seeds two RNGs per sample and checks its budget on the real prompt: no speed target
        verdict = ("PASS" if ours / reference >= 3 else "FAIL") if setting == "paper" else "(no target)"
        print(f"{'multihop':10}{f'--setting {setting}':38}{context:7}{ours:10.0f}{reference:9d}"
              f"{ours / reference:8.2f}  {verdict}")  # fmt: skip
    ours = babilong_rate(args.seconds)
    verdict = "PASS" if ours / BABILONG_RATE >= 3 else "FAIL"
    print(f"{'babilong':10}{'prompt formatting':38}{'':7}{ours:10.0f}{BABILONG_RATE:9d}{ours / BABILONG_RATE:8.2f}  "
          f"{verdict}")  # fmt: skip
    for generator, preset, num in WRITE_SETTINGS:
        times = {}
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                write_dataset(generator, preset, "train", num, 0, out, shards=2, workers=workers, progress=False)
                times[workers] = time.perf_counter() - start
        print(f"write_dataset {preset} train, {num} samples: 1 worker {times[1]:.2f} s, 2 workers {times[2]:.2f} s, "
              f"speed-up {times[1] / times[2]:.2f}x")  # fmt: skip

    lano_verification()


def lano_verification(samples: int = 3000):
    """The longest of `samples` strings of cfg3j and of cfg3k, verified in fresh processes."""
    length, seconds, memory = REFERENCE_VERIFY
    print(f"Lano verification (reference: {seconds:.0f} s, {memory / 1e9:.1f} GB for {length} tokens)")
    for cfg in ("cfg3j", "cfg3k"):
        grammar, rng = load_grammar(cfg), random.Random(0)
        string = max((derive(grammar, rng)[0] for _ in range(samples)), key=len)
        script = subprocess.run([sys.executable, "-c", VERIFY_SCRIPT, cfg, json.dumps(string)], capture_output=True,
                                text=True, check=True)  # fmt: skip
        member, ours, peak = json.loads(script.stdout)
        print(f"  {cfg} longest of {samples}: {len(string)} tokens, member {member}: {ours:.3f} s, "
              f"{peak / 1e6:.0f} MB; time {seconds / ours:.0f}x and memory {memory / peak:.0f}x less than the "
              f"reference's {length}-token string  {'PASS' if ours <= 1 and peak <= 300e6 else 'FAIL'}")  # fmt: skip


if __name__ == "__main__":
    main()
