"""Message statuses only move up (API.md: "Statuses never move backwards")."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from domain.status import (
    RANK,
    WEBHOOK_STATUSES,
    MessageStatus,
    advance,
    is_final,
)

S = MessageStatus


def test_the_rank_order() -> None:
    """failed ranks above sent but below delivered and read (module docstring, cloud-api §4.3)."""
    assert sorted(MessageStatus, key=RANK.__getitem__) == [
        S.QUEUED,
        S.ACCEPTED,
        S.SENT,
        S.FAILED,
        S.DELIVERED,
        S.READ,
    ]
    assert len(set(RANK.values())) == len(MessageStatus)


def test_the_cloud_api_reports_sent_delivered_read_and_failed() -> None:
    assert frozenset({S.SENT, S.DELIVERED, S.READ, S.FAILED}) == WEBHOOK_STATUSES


@pytest.mark.parametrize(
    ("current", "incoming", "result"),
    [
        (S.QUEUED, S.ACCEPTED, S.ACCEPTED),
        (S.ACCEPTED, S.SENT, S.SENT),
        (S.QUEUED, S.DELIVERED, S.DELIVERED),  # "sent" may arrive late or never
        (S.SENT, S.FAILED, S.FAILED),  # a failure after "sent" is news
        (S.QUEUED, S.FAILED, S.FAILED),  # the router gives up before Meta accepted it
        (S.FAILED, S.DELIVERED, S.DELIVERED),  # multi-device: failed, then delivered
        (S.FAILED, S.READ, S.READ),
        (S.DELIVERED, S.READ, S.READ),
        (S.DELIVERED, S.FAILED, None),  # the customer has it
        (S.READ, S.FAILED, None),
        (S.READ, S.DELIVERED, None),  # late webhook
        (S.DELIVERED, S.SENT, None),
        (S.SENT, S.ACCEPTED, None),  # the dispatcher's record after the first webhook
        (S.SENT, S.SENT, None),  # redelivered webhook
        (S.READ, S.READ, None),
        (S.QUEUED, S.QUEUED, None),
    ],
)
def test_advance(current: S, incoming: S, result: S | None) -> None:
    assert advance(current, incoming) == result


@pytest.mark.parametrize(
    ("status", "final"),
    [
        (S.QUEUED, False),
        (S.ACCEPTED, False),
        (S.SENT, False),
        (S.DELIVERED, False),
        (S.READ, True),
        (S.FAILED, True),
    ],
)
def test_is_final(status: S, final: bool) -> None:
    assert is_final(status) is final


def test_statuses_are_their_wire_names() -> None:
    assert [str(status) for status in MessageStatus] == [
        "queued",
        "accepted",
        "sent",
        "failed",
        "delivered",
        "read",
    ]


class MessageStatuses(RuleBasedStateMachine):
    """One message: the dispatcher's ``accepted`` and Meta's webhooks, in any order, any number
    of times; every event goes through :func:`advance` the way the webhook service applies it."""

    def __init__(self) -> None:
        super().__init__()
        self.status = S.QUEUED
        self.seen: list[S] = [S.QUEUED]
        self.rank_before = RANK[S.QUEUED]

    def apply(self, incoming: S) -> None:
        before = self.status
        moved = advance(before, incoming)
        if moved is None:
            assert RANK[incoming] <= RANK[before]
        else:
            assert moved is incoming
            assert RANK[moved] > RANK[before]
            self.status = moved
        self.seen.append(incoming)

    @rule(incoming=st.sampled_from(sorted(WEBHOOK_STATUSES)))
    def webhook(self, incoming: S) -> None:
        self.apply(incoming)

    @rule()
    def dispatcher_accepted(self) -> None:
        self.apply(S.ACCEPTED)

    @precondition(lambda self: len(self.seen) > 1)
    @rule(data=st.data())
    def redelivery(self, data: st.DataObject) -> None:
        """Meta redelivers a webhook it already sent (or we replay our own record)."""
        self.apply(data.draw(st.sampled_from(self.seen[1:])))

    @invariant()
    def never_downgrades(self) -> None:
        assert RANK[self.status] >= self.rank_before
        self.rank_before = RANK[self.status]

    @invariant()
    def the_status_is_the_highest_ranked_event_seen(self) -> None:
        assert self.status == max(self.seen, key=RANK.__getitem__)


MessageStatuses.TestCase.settings = settings(
    max_examples=200, stateful_step_count=25, deadline=None
)
TestMessageStatuses = MessageStatuses.TestCase
