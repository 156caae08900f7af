#!/bin/bash
# Session 4's device call: CV of the fourth round's candidates from $1 on (one BLAS
# thread each, in parallel), then bench/train_speed.py on the host's CPU and GPU.
# Everything lands in one tarball in $OUT (a run returns at most 8 files).
export PYTHONPATH=src
D=/tmp/sh/datasets/catvnoncat R=/tmp/res
mkdir -p $D $R && cp data/*.h5 $D/
export ITSACAT_SHARED=/tmp/sh
(nproc; nvidia-smi -L; lscpu | grep "Model name") > $R/host.txt 2>&1
python3 -c "
import sys; sys.path.insert(0, 'bench'); import select_defaults as s
names = list(s.CANDIDATES); print('\n'.join(names[names.index('default (centred He, flip, balanced, shift 4, L2 1.0)') + int(sys.argv[1]):]))
" "${1:-0}" > $R/names.txt 2>> $R/host.txt
i=0
while read -r name; do
  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 timeout 300 python3 bench/select_defaults.py \
    --seeds 3 --exact --only "$name" --data $D > $R/cv-$(printf %02d $i).txt 2>&1 &
  i=$((i+1))
done < $R/names.txt
wait
echo "cv done $SECONDS s" >> $R/host.txt
timeout 170 python3 bench/train_speed.py --shift 0 --repeat 2 --gpu --data $D > $R/train_speed-shift0.txt 2>&1
echo "all done $SECONDS s" >> $R/host.txt
tar czf $OUT/results.tar.gz -C $R .
