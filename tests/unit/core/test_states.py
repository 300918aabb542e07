import pytest

from gateway.models import ChannelStatus, RefundStatus
from gateway.states import ALLOWED, InvalidTransition, check, target_for

S = RefundStatus


def test_final_states_have_no_exits() -> None:
    for status in (S.SUCCEEDED, S.FAILED, S.CLOSED, S.REROUTED):
        assert ALLOWED[status] == frozenset()
        with pytest.raises(InvalidTransition):
            check(status, S.PROCESSING)


def test_not_found_never_moves_a_refund() -> None:
    for status in S:
        assert target_for(status, ChannelStatus.NOT_FOUND) is None


def test_processing_answer_does_not_reopen_abnormal() -> None:
    assert target_for(S.ABNORMAL, ChannelStatus.PROCESSING) is None
    assert target_for(S.ABNORMAL, ChannelStatus.SUCCEEDED) is S.SUCCEEDED


@pytest.mark.parametrize("channel,expected", [
    (ChannelStatus.SUCCEEDED, S.SUCCEEDED), (ChannelStatus.FAILED, S.FAILED),
    (ChannelStatus.CLOSED, S.CLOSED), (ChannelStatus.ABNORMAL, S.ABNORMAL),
    (ChannelStatus.PROCESSING, S.PROCESSING)])
def test_processing_moves_on_evidence(channel: ChannelStatus, expected: RefundStatus) -> None:
    assert target_for(S.PROCESSING, channel) is expected


def test_no_edge_leads_back_to_pending() -> None:
    for status, targets in ALLOWED.items():
        if status is not S.PENDING:
            assert S.PENDING not in targets
