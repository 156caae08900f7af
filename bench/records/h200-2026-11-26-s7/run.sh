#!/bin/bash
# Seventh session's device call: the GPU tests, then (one BLAS thread per process, in
# parallel) the default's validation P(cat) on 10 fresh seeds per fold, two blur
# candidates on 3 of them, and the default's test P(cat) over seeds 0-95.
export PYTHONPATH=src
P=bench/records/cv-prototypes-s7/probs.py.txt
export DATA=/tmp/d RES=/tmp/res
mkdir -p $DATA $RES /tmp/sh/datasets/catvnoncat && cp data/*.h5 $DATA/ && cp data/*.h5 /tmp/sh/datasets/catvnoncat/
export ITSACAT_SHARED=/tmp/sh
(nproc; nvidia-smi -L; lscpu | grep "Model name"; python3 -c "import numpy; print(numpy.__version__)") > $RES/host.txt 2>&1
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu_stage.py tests/test_backend.py tests/test_fastpath.py > $RES/gpu-tests.log 2>&1; echo "rc=$?" >> $RES/gpu-tests.log
echo "gpu tests done $SECONDS s" >> $RES/host.txt
[ "$1" = gpu-only ] && { tar czf $OUT/results.tar.gz -C $RES .; exit; }
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
for f in 0 1 2 3 4; do
  timeout 400 python3 $P cv $f default 10 11 12 13 14 15 16 17 18 19 > $RES/cv-default-f$f.txt 2>&1 &
  for c in blur0.7 blur1.0; do
    timeout 400 python3 $P cv $f $c 10 11 12 > $RES/cv-$c-f$f.txt 2>&1 &
  done
done
for s in 0 12 24 36 48 60 72 84; do
  timeout 400 python3 $P test $s 12 > $RES/test-$s.txt 2>&1 &
done
wait
echo "all done $SECONDS s" >> $RES/host.txt
tar czf $OUT/results.tar.gz -C $RES .
