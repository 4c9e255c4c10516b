"""The docks' shared state (napari_seal.state): plain Python, observed per field."""

from __future__ import annotations

import gc
import logging

import pytest

from napari_seal.state import FIELDS, ExploreState, state_for


def test_observers_see_changes_of_their_fields_only_and_once():
    state = ExploreState()
    all_seen, store_seen = [], []
    state.observe(lambda n, v: all_seen.append((n, v)))
    state.observe(lambda n, v: store_seen.append(v), ("store",))
    state.set(model="runA", store="s.zarr")
    state.set(model="runA")  # unchanged: not announced
    state.set(store="t.zarr")
    assert all_seen == [("model", "runA"), ("store", "s.zarr"), ("store", "t.zarr")]
    assert store_seen == ["s.zarr", "t.zarr"]
    assert state.model == "runA"
    assert state.as_dict()["store"] == "t.zarr"
    assert set(state.as_dict()) == set(FIELDS)


def test_unknown_fields_are_refused_and_nothing_changes():
    state = ExploreState(gene="ERBB2")
    with pytest.raises(KeyError, match="genee"):
        state.set(genee="GRB7", gene="GRB7")
    assert state.gene == "ERBB2"
    with pytest.raises(KeyError):
        state.observe(lambda n, v: None, ("nope",))
    with pytest.raises(AttributeError):
        _ = state.nope


def test_a_failing_observer_neither_breaks_the_writer_nor_the_others(caplog):
    state = ExploreState()
    seen = []

    def broken(name, value):
        msg = "observer bug"
        raise RuntimeError(msg)

    state.observe(broken)
    state.observe(lambda n, v: seen.append(v))
    with caplog.at_level(logging.ERROR, logger="napari_seal.state"):
        state.set(gene="ERBB2")
    assert seen == ["ERBB2"]
    assert "observer bug" in caplog.text
    state.unobserve(broken)
    state.set(gene="GRB7")
    assert seen == ["ERBB2", "GRB7"]


def test_one_state_per_owner_released_with_it():
    class Owner:
        pass

    a, b = Owner(), Owner()
    assert state_for(a) is state_for(a)
    assert state_for(a) is not state_for(b)
    state_for(a).set(gene="X")
    assert state_for(b).gene is None
    from napari_seal import state as module

    n = len(module._STATES)
    del a
    gc.collect()
    assert len(module._STATES) == n - 1
