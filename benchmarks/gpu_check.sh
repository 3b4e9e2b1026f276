#!/usr/bin/env bash
# Everything this project checks on a lent GPU, in one command of at most about 8 minutes, ending with one summary
# table: the [cuda] extras, the CUDA-only tests, the trainer's step in bf16 under torch.compile (Llama vs
# LlamaCanon-ABCD), canon_1B.yaml shrunk to one GPU for 30 steps each (words/s, MFU, memory), the Hugging Face decode
# ratio, and a 2-process FSDP run on nccl when there are two GPUs. Without a GPU it says so in one line and exits 0.
#
#   bash benchmarks/gpu_check.sh            (from anywhere; PYTHON=... picks the interpreter, default .venv/bin/python)
#
# Every stage has its own time limit; a stage that fails or runs out of time is a row of the table, not the end of
# the check. Logs of every stage stay in $GPU_CHECK_DIR (default: a new temporary folder, printed at the end).
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to check"
    exit 0
fi

OUT=${GPU_CHECK_DIR:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.tsv
: >"$SUMMARY"
row() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$SUMMARY"; } # stage, result, details
START=$(date +%s)
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
NAME=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")
row "machine" "$GPUS GPU(s)" "$NAME, torch $("$PY" -c 'import torch; print(torch.__version__)')"

# 1. the [cuda] extras: causal-conv1d, flash-linear-attention, and mamba-ssm where it installs (each on its own)
if "$PY" -m pip --version >/dev/null 2>&1; then
    PIP=("$PY" -m pip install -q --no-build-isolation)
else
    PIP=(uv pip install -q --python "$PY" --no-build-isolation)
fi
for spec in "causal_conv1d causal-conv1d>=1.4.0 45" "fla flash-linear-attention 45" "mamba_ssm mamba-ssm 60"; do
    set -- $spec
    if "$PY" -c "import $1" >/dev/null 2>&1; then
        row "install $2" "present" "already importable"
    elif timeout "$3" "${PIP[@]}" "$2" >"$OUT/install_$1.log" 2>&1 && "$PY" -c "import $1" >/dev/null 2>&1; then
        row "install $2" "ok" "installed"
    else
        row "install $2" "FAIL" "not installed (see install_$1.log); its paths fall back to PyTorch"
    fi
done

# 2. the tests that only run on CUDA (Canon paths incl. causal-conv1d, the models' CUDA paths, fla/mamba kernels)
if timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/huggingface/test_canon.py tests/huggingface_linear/test_cuda.py \
    tests/huggingface/test_model.py -k "canon or cuda" >"$OUT/tests.log" 2>&1; then
    row "CUDA tests" "PASS" "$(tail -1 "$OUT/tests.log")"
else
    row "CUDA tests" "FAIL" "$(tail -1 "$OUT/tests.log") (tests.log)"
fi

# 3. the trainer's step, bf16, compiled (benchmarks/trainer_canon.py), dims 512 and 1024
if timeout 120 "$PY" benchmarks/trainer_canon.py --device cuda --dtype bf16 --modes compiled --shapes 512,1024 \
    --rounds 10 --warmup 3 >"$OUT/trainer_canon.log" 2>&1; then
    while read -r family shape mode ours base ratio memory _; do
        row "trainer step d=$shape" "$ratio" "LlamaCanon-ABCD / Llama, compiled bf16: $ours s vs $base s, memory $memory"
    done < <(awk '/^-+$/ {table = NR} {lines[NR] = $0} END {for (i = table + 1; i <= NR; i++) print lines[i]}' \
        "$OUT/trainer_canon.log")
else
    row "trainer step" "FAIL" "see trainer_canon.log"
fi

# 4. canon_1B.yaml shrunk to one GPU (4 x 2048 tokens per step, no eval), 30 steps of Llama and of LlamaCanon
if timeout 180 "$PY" - "$OUT" "$NAME" >"$OUT/canon_1B.log" 2>&1 <<'EOF'; then
import json, os, random, statistics, subprocess, sys
from pathlib import Path

out, gpu = Path(sys.argv[1]), sys.argv[2]
lingua = Path("lingua_modified").resolve()
sys.path.insert(0, str(lingua))
from lingua.args import load_yaml

# pre-tokenized records for the 1B runs (32000-word vocabulary), text for debug.yaml's source (the FSDP stage)
rng = random.Random(0)
for source, make in (
    ("tokens", lambda: {"tokens": [rng.randrange(3, 32000) for _ in range(rng.randint(500, 3000))]}),
    ("debug", lambda: {"text": " ".join(f"w{rng.randrange(500)}" for _ in range(rng.randint(20, 200)))}),
):
    (out / "data" / source).mkdir(parents=True, exist_ok=True)
    with open(out / "data" / source / f"{source}.chunk.00.jsonl", "w") as f:
        f.writelines(json.dumps(make()) + "\n" for _ in range(3000))
# dense bf16 peak of the GPU (FLOP/s), for MFU
peak = next((v for k, v in {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}.items() if k in gpu), None)
rows = {}
for name, canon_set in (("Llama", ""), ("LlamaCanon", "ABCD")):
    config = load_yaml(str(lingua / "apps/main/configs/canon_1B.yaml"))
    for key in ("eval", "async_eval_gpus"):
        config.pop(key, None)
    config.update(steps=30, dump_dir=str(out / f"run_{name}"))
    config["model"]["canon_set"] = canon_set
    config["checkpoint"] = {"dump": {"every": 1000}, "eval": {"every": 1000}}
    config["logging"] = {"freq": 5}
    config["data"].update(root_dir=str(out / "data"), sources={"tokens": 1.0}, batch_size=4, seq_len=2048,
                          tokenizer={"name": "tokens", "vocab_size": 32000}, load_async=False)
    path = out / f"{name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    env = dict(os.environ, PYTHONPATH=str(lingua))
    result = subprocess.run([sys.executable, "-m", "apps.main.train", f"config={path}"], cwd=lingua, env=env,
                            capture_output=True, text=True)
    (out / f"train_{name}.log").write_text(result.stdout + result.stderr)
    if result.returncode:
        print(f"{name}: exit {result.returncode}")
        sys.exit(1)
    records = [json.loads(line) for line in open(out / f"run_{name}" / "metrics.jsonl")]
    late = [r for r in records if r["global_step"] > 10]
    wps = statistics.median(r["speed/wps"] for r in late)
    flops = statistics.median(r["speed/FLOPS"] for r in late)
    memory = max(r["memory/max_active_gib"] for r in records)
    rows[name] = (wps, flops, memory)
    mfu = f"{100 * flops / peak:.1f}%" if peak else "unknown peak"
    print(f"ROW\t1B 30 steps {name}\t{wps:,.0f} wps\tMFU {mfu}, peak memory {memory:.1f} GiB, loss {late[-1]['loss/out']:.3f}")
(l_wps, _, l_mem), (c_wps, _, c_mem) = rows["Llama"], rows["LlamaCanon"]
print(f"ROW\t1B LlamaCanon / Llama\t{l_wps / c_wps:.3f}\tstep-time ratio (wps Llama / wps LlamaCanon); memory {c_mem / l_mem:.3f}")
EOF
    grep "^ROW" "$OUT/canon_1B.log" | cut -f2- >>"$SUMMARY"
else
    row "1B 30 steps" "FAIL" "$(tail -1 "$OUT/canon_1B.log") (canon_1B.log)"
fi

# 5. Hugging Face decode: LlamaCanon-ABCD vs transformers' Llama tokens/s (and its train step and memory)
if timeout 80 "$PY" benchmarks/hf_llamacanon.py --device cuda >"$OUT/hf.log" 2>&1; then
    grep -E "^(train step|greedy decode|train peak)" "$OUT/hf.log" | while read -r line; do
        metric=$(echo "$line" | sed -E 's/ +[0-9.]+ +[0-9.]+ +[0-9.]+ +.*$//')
        ratio=$(echo "$line" | awk '{print $(NF-3)}')
        row "HF $metric" "$ratio" "$(echo "$line" | awk '{print $(NF-2), $(NF-1), $NF}')"
    done
else
    row "HF decode" "FAIL" "see hf.log"
fi

# 6. two processes, FSDP full_shard on nccl, when the machine has two GPUs
if [ "$GPUS" -ge 2 ]; then
    if (cd lingua_modified && PYTHONPATH=. timeout 120 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
        -m apps.main.train config=apps/main/configs/debug.yaml dump_dir="$OUT/fsdp" data.root_dir="$OUT/data" \
        steps=20 distributed.fsdp_type=full_shard) >"$OUT/fsdp.log" 2>&1; then
        row "FSDP 2 GPUs nccl" "PASS" "20 steps, full_shard"
    else
        row "FSDP 2 GPUs nccl" "FAIL" "see fsdp.log"
    fi
else
    row "FSDP 2 GPUs nccl" "skipped" "one GPU"
fi

echo
echo "gpu_check on $NAME: $(($(date +%s) - START)) s, logs in $OUT"
printf '%-34s %-16s %s\n' "stage" "result" "details"
printf '%.0s-' {1..110}
echo
while IFS=$'\t' read -r stage result details; do
    printf '%-34s %-16s %s\n' "$stage" "$result" "$details"
done <"$SUMMARY"
