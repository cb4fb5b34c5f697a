"""Schedules: after each epoch's evaluation, whether the model
is the best so far, the learning rate, and when to stop.

The Flux model zoo's ``conv.jl`` ends every epoch with these rules, which
:class:`ModelZoo` keeps exactly:

    if acc >= best_acc:                       save the model;
                                              best_acc = acc; last_improvement = epoch
    if acc >= 0.999:                          stop ("Early-exiting")
    elif epoch - last_improvement >= 5 and lr > 1e-6:
                                              lr = lr / 10; last_improvement = epoch
    elif epoch - last_improvement >= 10:      stop ("converged")

A schedule has state (the best accuracy, when it came, when the rate last
dropped) that a resumed run needs back exactly: :meth:`Schedule.state` gives
it as plain numbers for the run state file and :meth:`Schedule.load_state`
takes it back. Any object with ``improved``, ``update``, ``state`` and
``load_state`` can be passed to ``fit`` instead; :class:`Schedule` itself
keeps the best model and stops at a target, with a constant learning rate.
"""
from __future__ import annotations

import logging

log = logging.getLogger("tinyflux.train")


class Schedule:
    """Keep the best accuracy; stop when it reaches ``target``; never change the learning rate."""

    def __init__(self, target: float = 0.999):
        self.target = target
        self.best_accuracy = 0.0
        self.best_epoch = 0  # 0: no epoch has been the best yet (nothing saved)
        self.last_improvement = 0  # the epoch of the last improvement or learning-rate drop

    def improved(self, accuracy: float) -> bool:
        """Whether ``accuracy`` is at least the best so far (then the model is saved)."""
        return accuracy >= self.best_accuracy

    def update(self, epoch: int, accuracy: float, optimizer) -> str:
        """Take the epoch's accuracy; change ``optimizer.lr``
        if the rules say so; return why the run stops, or ""."""
        if self.improved(accuracy):
            self.best_accuracy, self.best_epoch, self.last_improvement = accuracy, epoch, epoch
        if accuracy >= self.target:
            log.info(f" -> Early-exiting: We reached our target accuracy of {100 * self.target:g}%")
            return "reached the target accuracy"
        return ""

    def state(self) -> dict:
        """Everything a resumed run needs to continue this schedule, as plain numbers."""
        return {"best_accuracy": self.best_accuracy, "best_epoch": self.best_epoch,
                "last_improvement": self.last_improvement}

    def load_state(self, state: dict) -> None:
        self.best_accuracy = float(state["best_accuracy"])
        self.best_epoch = int(state["best_epoch"])
        self.last_improvement = int(state["last_improvement"])


class ModelZoo(Schedule):
    """``conv.jl``'s schedule: divide the learning rate by ``factor`` after
    ``patience`` epochs without improvement (while it is above ``min_lr``),
    stop after ``stop_after`` epochs without improvement, or at ``target``."""

    def __init__(self, patience: int = 5, stop_after: int = 10, factor: float = 10.0,
                 min_lr: float = 1e-6, target: float = 0.999):
        super().__init__(target)
        self.patience, self.stop_after = patience, stop_after
        self.factor, self.min_lr = factor, min_lr

    def update(self, epoch: int, accuracy: float, optimizer) -> str:
        stopped = super().update(epoch, accuracy, optimizer)
        if stopped:
            return stopped
        if epoch - self.last_improvement >= self.patience and optimizer.lr > self.min_lr:
            optimizer.lr /= self.factor
            log.warning(" -> Haven't improved in a while, dropping learning "
                        f"rate to {optimizer.lr:g}!")
            self.last_improvement = epoch
        elif epoch - self.last_improvement >= self.stop_after:
            log.warning(" -> We're calling this converged.")
            return "converged"
        return ""
