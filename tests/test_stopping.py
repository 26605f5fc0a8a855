"""Stopping a run on request: after the step, promptly, or at once."""

import os
import signal
import time

import pytest

from kstyle.stopping import StopRequest, TrainingStopped


def test_a_stop_signal_stops_after_the_step_and_a_second_one_at_once():
    stop = StopRequest()  # a library call: no thread, a second Ctrl-C raises as usual
    before = signal.getsignal(signal.SIGTERM)
    with stop.handling_signals():
        stop.on_train_batch_end(0)  # nothing asked yet
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal_name == "SIGTERM"
        with pytest.raises(TrainingStopped, match="stopped by SIGTERM"):
            stop.on_train_batch_end(1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_hard_stop_is_watched_from_a_thread_and_waits_for_the_step(monkeypatch):
    stop = StopRequest(hard=True, last_checkpoint=lambda: "run/checkpoints/ckpt-4")
    exits = []
    monkeypatch.setattr(stop, "_exit", exits.append)  # instead of ending pytest
    stop.step_seconds = 4.0  # a slow step: the grace grows to 1.5 steps
    assert stop.grace_seconds() == 6.0
    stop.step_seconds = 60.0
    assert stop.grace_seconds() == 9.0  # capped: a stop always ends within 10 s
    stop.step_seconds = 0.0
    before = (signal.getsignal(signal.SIGTERM), signal.set_wakeup_fd(-1))
    signal.set_wakeup_fd(before[1])
    with stop.handling_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while stop.signal_name is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.signal_name == "SIGTERM" and stop._deadline is not None
        with pytest.raises(TrainingStopped):
            stop.on_train_batch_end(1)  # a step ended in time: no forced exit
        assert stop._deadline is None
        os.kill(os.getpid(), signal.SIGINT)  # a second signal: at once
        deadline = time.monotonic() + 5
        while not exits and time.monotonic() < deadline:
            time.sleep(0.01)
        assert exits == ["stopped at once by a second SIGINT"]
    assert signal.getsignal(signal.SIGTERM) is before[0]
    assert signal.set_wakeup_fd(-1) == before[1]  # restored
    signal.set_wakeup_fd(before[1])


def test_a_hard_stop_without_a_step_boundary_ends_after_the_grace(monkeypatch):
    stop = StopRequest(hard=True)
    exits = []
    monkeypatch.setattr(stop, "_exit", exits.append)
    monkeypatch.setattr(StopRequest, "grace_seconds", lambda self: 0.2)
    with stop.handling_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)  # the main thread is busy: no step ends
    assert exits == ["SIGTERM: no step ended within 0 s"]
    stop = StopRequest(hard=True)
    monkeypatch.setattr(stop, "_exit", exits.append)
    with stop.handling_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    time.sleep(0.5)  # the run ended first: the deadline was cancelled with it
    assert len(exits) == 1


def test_a_stop_on_another_worker_stops_this_one():
    elsewhere = StopRequest(agree=lambda flag: 1)  # another worker was asked to stop
    with pytest.raises(TrainingStopped, match="a stop on another worker"):
        elsewhere.on_train_batch_end(0)
