#!/bin/bash
# Seventh session's second device call: bench/seeds.py (params.yaml with model.threshold
# 0.35) over seeds 0-95 in 8 shards, one BLAS thread each.
export PYTHONPATH=src DATA=/tmp/d RES=/tmp/res OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
mkdir -p $DATA $RES && cp data/*.h5 $DATA/
for s in 0 12 24 36 48 60 72 84; do
  timeout 400 python3 bench/seeds.py --seeds 12 --start $s --per-seed --data $DATA > $RES/seeds-$s.txt 2>&1 &
done
wait
echo "done $SECONDS s" > $RES/host.txt
tar czf $OUT/results.tar.gz -C $RES .
