"""The median stopping rule a trial applies after each training epoch, and the medians the client hands it. No
TensorFlow."""

from __future__ import annotations

import pytest

from toolchain.tuner import Pruned, TrialJob


def job(medians, warmup=2):
    return TrialJob({}, "cortex-m4", "/nowhere", "/nowhere", "/nowhere", medians, warmup)


def test_a_trial_stops_below_the_median_only_after_the_warmup():
    j = job([0.5, 0.6, 0.7, 0.8])
    j._watch(1, 0.1)  # in the warmup: far below, kept
    j._watch(2, 0.2)
    j._watch(3, 0.75)  # above the median at epoch 3
    with pytest.raises(Pruned) as exc:
        j._watch(4, 0.79)
    assert (exc.value.epoch, exc.value.median) == (4, 0.8) and j.curve == [0.1, 0.2, 0.75, 0.79]
    assert str(exc.value) == "epoch 4: eval 0.7900 below the median 0.8000 of the finished trials"
    job([0.5, 0.6, 0.7])._watch(5, 0.1)  # past every finished trial's epochs: no median to hold it to
    job(None)._watch(4, 0.0)  # no pruner (or too few finished trials)
    with pytest.raises(Pruned):
        job([0.5, 0.6, 0.7])._watch(3, float("nan"))  # NaN never passes


def test_the_medians_come_from_the_finished_trials_curves():
    from types import SimpleNamespace

    from toolchain.tuner import _medians

    def trial(curve, finished=True):
        state = SimpleNamespace(is_finished=lambda: finished)
        return SimpleNamespace(state=state, user_attrs={"curve": curve})

    study = SimpleNamespace(
        get_trials=lambda deepcopy=False: [
            trial([0.2, 0.4, 0.6]),
            trial([0.4, 0.8]),
            trial([0.9, 0.9, 0.9]),
            trial([1.0], finished=False),
            trial([]),
        ]
    )
    medians, n = _medians([SimpleNamespace(study=study)])
    assert n == 3 and medians == [0.4, 0.8, 0.75]
