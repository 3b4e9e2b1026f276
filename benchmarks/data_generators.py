"""Samples per second of our generators against the reference's single-process rates (spec data.md §8), and the
speed-up of `write_dataset` with 2 worker processes. Ratios are ours / reference (upper end of the reference's
measured range, so the ratio is a lower bound); target >= 3 in one process.

    python benchmarks/data_generators.py [--seconds 1.0]
"""

import argparse
import tempfile
import time

from data_synthetic_pretrain import make_sample, write_dataset

# (generator, preset, split): reference samples/s, upper end of the range in spec data.md §8
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
}


def rate(generator, preset, split, seconds):
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        make_sample(generator, preset, split, seed=0, index=count)
        count += 1
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per generator setting")
    args = parser.parse_args()
    print(f"{'generator':10}{'preset':12}{'split':7}{'ours/s':>10}{'ref/s':>9}{'ratio':>8}  target >= 3")
    for (generator, preset, split), reference in REFERENCE_RATES.items():
        ours = rate(generator, preset, split, args.seconds)
        verdict = "PASS" if ours / reference >= 3 else "FAIL"
        print(f"{generator:10}{preset:12}{split:7}{ours:10.0f}{reference:9d}{ours / reference:8.2f}  {verdict}")
    num = 3000
    times = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            write_dataset("depo", "depo1-375", "train", num, 0, out, shards=2, workers=workers, progress=False)
            times[workers] = time.perf_counter() - start
    print(f"write_dataset depo1-375 train, {num} samples: 1 worker {times[1]:.2f} s, 2 workers {times[2]:.2f} s, "
          f"speed-up {times[1] / times[2]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
