"""The pure transition table: exactly the seed's Diagram 1, nothing more."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saferun.domain.states import TERMINAL, TRANSITIONS, Event, WorkflowState, next_state
from saferun.errors import InvalidTransition

S = WorkflowState

DIAGRAM_1 = {
    (S.INITIALIZED, S.EXECUTING),
    (S.EXECUTING, S.AWAITING_APPROVAL),
    (S.AWAITING_APPROVAL, S.EXECUTING),
    (S.AWAITING_APPROVAL, S.ROLLING_BACK),
    (S.AWAITING_APPROVAL, S.FAILED),
    (S.ROLLING_BACK, S.EXECUTING),
    (S.ROLLING_BACK, S.FAILED),
    (S.EXECUTING, S.SETTLING),
    (S.EXECUTING, S.FAILED),
    (S.SETTLING, S.COMPLETED),
    (S.SETTLING, S.FAILED),
}


def test_there_are_exactly_seven_states() -> None:
    assert [s.value for s in S] == [
        "initialized",
        "executing",
        "awaiting_approval",
        "rolling_back",
        "settling",
        "completed",
        "failed",
    ]


def test_table_edges_are_the_diagram_edges() -> None:
    assert {(src, dst) for (src, _), dst in TRANSITIONS.items()} == DIAGRAM_1
    assert len(TRANSITIONS) == 12  # two distinct events lead AWAITING_APPROVAL back to EXECUTING


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL:
        for event in Event:
            with pytest.raises(InvalidTransition):
                next_state(state, event)


@given(st.sampled_from(list(S)), st.sampled_from(list(Event)))
def test_every_pair_is_either_an_edge_or_a_typed_refusal(state: WorkflowState, event: Event) -> None:
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) == TRANSITIONS[(state, event)]
    else:
        with pytest.raises(InvalidTransition) as info:
            next_state(state, event, "wf_x")
        assert info.value.state == state.value and info.value.event == event.value


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_random_event_sequences_only_visit_reachable_states(events: list[Event]) -> None:
    state = S.INITIALIZED
    for event in events:
        try:
            state = next_state(state, event)
        except InvalidTransition:
            continue
        assert state in S
    assert state in S
