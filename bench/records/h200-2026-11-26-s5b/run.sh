#!/bin/bash
# Fifth session's second device call: CV of weight averaging (SWA) from 50%, 75%, 90% of
# the epochs, and the default as the control, one BLAS thread each, in parallel.
export PYTHONPATH=src ITSACAT_ROOT=$PWD
D=/tmp/sh/datasets/catvnoncat R=/tmp/res
mkdir -p $D $R && cp data/*.h5 $D/
export ITSACAT_SHARED=/tmp/sh OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
P=bench/records/cv-prototypes-s5/swa.py.txt
for f in 0.5 0.75 0.9; do
  SWA_FROM=$f timeout 400 python3 $P --seeds 3 --exact --only "default + swa $f" --data $D > $R/cv-swa-$f.txt 2>&1 &
done
AUG=none timeout 400 python3 bench/records/cv-prototypes-s5/augment5.py.txt --seeds 3 --exact --only "default + none" --data $D > $R/cv-none.txt 2>&1 &
wait
echo "done $SECONDS s" > $R/host.txt
tar czf $OUT/results.tar.gz -C $R .
