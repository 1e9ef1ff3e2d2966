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


def test_the_medians_come_from_complete_trials_of_the_same_schedule():
    from types import SimpleNamespace

    from optuna.trial import TrialState

    from toolchain.tuner import _medians

    def trial(curve, epochs=3):
        return SimpleNamespace(user_attrs={"curve": curve, "epochs": epochs})

    trials = [trial([0.2, 0.4, 0.6]), trial([0.4, 0.8, 0.8]), trial([0.9, 0.9, 0.9]), trial([0.1] * 8, epochs=8)]
    trials.append(trial([]))  # a trial whose model was cached: no curve

    def get_trials(deepcopy=False, states=()):
        assert states == (TrialState.COMPLETE,)  # pruned trials' curves are cut short: not a schedule's median
        return trials

    study = SimpleNamespace(get_trials=get_trials)
    medians, n = _medians([SimpleNamespace(study=study)], 3)
    assert n == 3 and medians == [0.4, 0.8, 0.8]
    assert _medians([SimpleNamespace(study=study)], 8) == ([0.1] * 8, 1)
    assert _medians([SimpleNamespace(study=study)], 16) == ([], 0)
