"""Training: what every run needs, for any model, at two levels.

- **One call**: ``history = tf.train.fit(model, (x, y), val=(x_val, y_val),
  epochs=10, savepath="runs/a")`` trains with every guarantee below and
  returns the history (Keras's ``fit``, Lightning's ``Trainer``).
- **The pieces**, for a loop written out to be read, as the Flux model zoo
  does (``examples/mnist_conv.py``): a :class:`Run` (the folder, resume, the
  epoch's batches, progress bar and log line), a :class:`Step`, a schedule,
  :func:`accuracy`.

The guarantees: one run per folder, locked; nothing replaced unasked
(``resume`` or ``force``); the whole state saved after every epoch, so that
an interrupted run resumes exactly; the best model kept by its accuracy on a
validation split or the test set; a NaN stops the run with an error; Ctrl-C
waits until the epoch's files are written; on several ranks, the same step
as one process.

Layout, one module per concern so that each reads on its own:

    step.py      Step: forward, loss, backward, update (eager, CUDA graph, data-parallel)
    schedule.py  Schedule, ModelZoo: the best model, learning-rate drops, stops; saved and resumed
    evaluate.py  predict, accuracy, any_nan, split_validation: measuring, and the data decisions
                 around it (predicting classes of clips for a program: tinyflux/predict.py)
    runs.py      RunFolder: the lock, start or resume, the run state written and read in one call
                 each
    loop.py      Run (a run's pieces for an explicit loop), RandomStream, load_model, and fit
    flags.py     Settings and flag(): a dataclass whose fields are the command line, with its checks
    report.py    History, Flux-style log lines, exit codes and the Ctrl-C message of a command
"""
from .evaluate import (accuracy, any_nan, class_report, confusion_matrix, example_shape, predict,
                       sorted_by_class, split_validation, warn_if_sorted)
from .flags import Settings, flag, make_parser, parse, settings_of
from .loop import RandomStream, Run, export_saved, fit, load_model
from .report import (FluxStyle, History, interrupted_message, is_rank_zero, run_command,
                     setup_logging)
from .runs import DivergedError, RunFolder, RunFolderError, deferred_interrupt
from .schedule import ModelZoo, Schedule
from .step import Step

__all__ = ["DivergedError", "FluxStyle", "History", "ModelZoo", "RandomStream", "Run", "RunFolder",
           "RunFolderError", "Schedule", "Settings", "Step", "accuracy", "any_nan", "class_report",
           "confusion_matrix", "deferred_interrupt", "example_shape", "export_saved", "fit",
           "flag", "interrupted_message", "is_rank_zero", "load_model", "make_parser", "parse",
           "predict", "run_command", "settings_of", "setup_logging", "sorted_by_class",
           "split_validation", "warn_if_sorted"]
