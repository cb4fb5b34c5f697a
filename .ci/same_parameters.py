"""Whether two tinyflux checkpoints hold bit-identical parameters and optimizer state (m and v where saved).

    python .ci/same_parameters.py old/mnist_conv.state.h5 new/mnist_conv.state.h5

Used to show that a change of code left the arithmetic of a run as it was
(docs/results/train_library_identity.md). Exit status 0 when identical, 1 otherwise.
"""
import sys

import h5py
import numpy as np


def same(first, second) -> bool:
    with h5py.File(first) as a, h5py.File(second) as b:
        names = sorted(a["parameters"])
        if names != sorted(b["parameters"]):
            print(f"different parameter names: {names} against {sorted(b['parameters'])}")
            return False
        parameters = all(np.array_equal(a["parameters"][n][()], b["parameters"][n][()]) and
                         a["parameters"][n].dtype == b["parameters"][n].dtype for n in names)
        kinds = [kind for kind in ("m", "v") if kind in a.get("optimizer", {})]
        state = all(np.array_equal(a["optimizer"][k][n][()], b["optimizer"][k][n][()]) for k in kinds for n in names)
        steps = (int(a["optimizer"].attrs["t"]), int(b["optimizer"].attrs["t"])) if "optimizer" in a else None
        print(f"{len(names)} parameter arrays bit-identical: {parameters}; optimizer {'/'.join(kinds) or '-'} "
              f"bit-identical: {state}; steps t: {steps}")
        return parameters and state


if __name__ == "__main__":
    sys.exit(0 if same(*sys.argv[1:3]) else 1)
