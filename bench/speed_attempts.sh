#!/usr/bin/env bash
# Every speed attempt of issue 4, one JSON each in bench/results/speed/, then a Markdown table.
#   bash bench/speed_attempts.sh            (about 15 minutes on one idle core)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=bench/results/speed
mkdir -p $OUT
R="--repeats ${REPEATS:-5}"
run() { name=$1; shift; $PY bench/speed.py $R --out $OUT/$name.json "$@" | sed "s/^/[$name] /"; }
if [ -n "${ONLY:-}" ]; then  # e.g. ONLY=pair: run just the paired measurements
  for r in 128 64 32; do run pair_rank${r}_t1 --threads 1 --rank $r --repeats ${PAIR_REPEATS:-15} --cases pair; done
  $PY bench/speed.py --summarize $OUT > $OUT/table.md; exit 0
fi
run baseline_t1 --threads 1 --cases matmul,matmul_bf16,dense,sigma,sample,sample_dense
run compile_t1 --threads 1 --compile --cases dense,sigma,sample_dense
run bf16_t1 --threads 1 --precision bf16 --cases dense,sigma,sample_dense
run baseline_t2 --threads 2 --cases matmul,dense,sigma,sample_dense
run batch128_t1 --threads 1 --batch 128 --cases dense,sigma
for r in 96 64 32; do run sigma_rank${r}_t1 --threads 1 --rank $r --cases sigma; done
run sigma_rank64_compile_t1 --threads 1 --rank 64 --compile --cases sigma
run ancestry_d8_t1 --threads 1 --depth 8 --cases dense,sigma,ancestry
# Paired: dense and sigma steps alternated in one process, so the ratio survives machine drift.
for r in 128 64 32; do run pair_rank${r}_t1 --threads 1 --rank $r --repeats ${PAIR_REPEATS:-15} --cases pair; done
$PY bench/speed.py --summarize $OUT > $OUT/table.md
cat $OUT/table.md
