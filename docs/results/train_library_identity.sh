#!/usr/bin/env bash
# The MNIST example before tinyflux.train (commit 60b1b4c, 544 lines) and after, run side by side on one
# machine with the same flags; .ci/same_parameters.py then compares their checkpoints.
#   git worktree add /tmp/old 60b1b4c && bash docs/results/train_library_identity.sh
set -e
cd /work/main
out=/tmp/identity; rm -rf $out; mkdir -p $out
run() { # name flags...
  name=$1; shift
  (cd /tmp/old && PYTHONPATH=/tmp/old /work/main/.venv/bin/python examples/mnist_conv.py --device cpu --savepath $out/old-$name "$@" > $out/old-$name.log 2>&1)
  (cd /work/main && .venv/bin/python examples/mnist_conv.py --device cpu --savepath $out/new-$name "$@" > $out/new-$name.log 2>&1)
}
run steps100 --epochs 1 --max-steps 100
run epoch1 --epochs 1
run val --epochs 2 --max-steps 30 --val-split 0.1 --shuffle
echo done > $out/finished
