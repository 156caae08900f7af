#!/bin/bash
# Fifth session's device call: CV of new augmentation prototypes (one BLAS thread each, in
# parallel) and the default params' test accuracy over seeds 0-95 in 6 shards.
export PYTHONPATH=src ITSACAT_ROOT=$PWD
D=/tmp/sh/datasets/catvnoncat R=/tmp/res
mkdir -p $D $R && cp data/*.h5 $D/
export ITSACAT_SHARED=/tmp/sh OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
(nproc; lscpu | grep "Model name"; python3 -c "import numpy; print(numpy.__version__)") > $R/host.txt 2>&1
P=bench/records/cv-prototypes-s5/augment5.py.txt
for m in none gray diag shift2 noise cutout bgr rot desat gray_diag; do
  AUG=$m timeout 480 python3 $P --seeds 3 --exact --only "default + $m" --data $D > $R/cv-$m.txt 2>&1 &
done
for s in 0 16 32 48 64 80; do
  timeout 480 python3 bench/seeds.py --seeds 16 --start $s --per-seed --data $D > $R/seeds-$s.txt 2>&1 &
done
wait
echo "done $SECONDS s" >> $R/host.txt
tar czf $OUT/results.tar.gz -C $R .
