"""What the dispatcher does with a failed send (cloud-api.md §3.2)."""

from __future__ import annotations

import pytest

from domain.errors import ErrorClass, classify

TRANSIENT = ErrorClass.TRANSIENT
SENDER_WIDE = ErrorClass.SENDER_WIDE
PERMANENT = ErrorClass.PERMANENT


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(1, id="1-api-unknown"),
        pytest.param(2, id="2-api-service-downtime"),
        pytest.param(4, id="4-app-call-limit"),
        pytest.param(613, id="613-endpoint-rate-limit"),
        pytest.param(80007, id="80007-waba-rate-limit"),
        pytest.param(130429, id="130429-throughput"),
        pytest.param(131000, id="131000-something-went-wrong"),
        pytest.param(131016, id="131016-service-unavailable"),
        pytest.param(131056, id="131056-pair-rate-limit"),
        pytest.param(131057, id="131057-maintenance-mode"),
        pytest.param(133004, id="133004-server-unavailable"),
    ],
)
def test_transient_codes_are_retried(code: int) -> None:
    assert classify(code, 400) is TRANSIENT
    assert classify(code, None) is TRANSIENT


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(0, id="0-auth-exception"),
        pytest.param(3, id="3-api-method"),
        pytest.param(10, id="10-permission-denied"),
        pytest.param(190, id="190-token-expired"),
        pytest.param(200, id="200-api-permission-first"),
        pytest.param(250, id="250-api-permission"),
        pytest.param(299, id="299-api-permission-last"),
        pytest.param(368, id="368-policy-block"),
        pytest.param(131031, id="131031-account-locked"),
        pytest.param(131042, id="131042-payment-issue"),
        pytest.param(131045, id="131045-incorrect-certificate"),
        pytest.param(131048, id="131048-spam-rate-limit"),
        pytest.param(133010, id="133010-number-not-registered"),
    ],
)
def test_sender_wide_codes_pause_the_sending_number(code: int) -> None:
    assert classify(code, 400) is SENDER_WIDE
    assert classify(code, None) is SENDER_WIDE


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(100, id="100-invalid-parameter"),
        pytest.param(199, id="199-just-below-permissions"),
        pytest.param(300, id="300-just-above-permissions"),
        pytest.param(130472, id="130472-experiment"),
        pytest.param(130497, id="130497-country-blocked"),
        pytest.param(131008, id="131008-required-parameter-missing"),
        pytest.param(131009, id="131009-parameter-not-valid"),
        pytest.param(131021, id="131021-recipient-is-sender"),
        pytest.param(131026, id="131026-undeliverable"),
        pytest.param(131030, id="131030-not-in-allowed-list"),
        pytest.param(131047, id="131047-re-engagement"),
        pytest.param(131049, id="131049-ecosystem-engagement"),
        pytest.param(131050, id="131050-user-stopped-marketing"),
        pytest.param(131051, id="131051-unsupported-type"),
        pytest.param(131053, id="131053-media-upload-error"),
        pytest.param(132000, id="132000-template-param-count"),
        pytest.param(132001, id="132001-template-missing"),
        pytest.param(132005, id="132005-hydrated-text-too-long"),
        pytest.param(132007, id="132007-format-policy"),
        pytest.param(132012, id="132012-template-param-format"),
        pytest.param(132015, id="132015-template-paused"),
        pytest.param(132016, id="132016-template-disabled"),
        pytest.param(135000, id="135000-generic-user-error"),
        pytest.param(999999, id="unknown-code"),
    ],
)
def test_permanent_codes_fail_the_message(code: int) -> None:
    assert classify(code, 400) is PERMANENT
    assert classify(code, None) is PERMANENT


@pytest.mark.parametrize(
    ("code", "http_status", "expected"),
    [
        # Meta: branch on the code, not on the HTTP status, which has changed over time.
        (131047, 500, PERMANENT),
        (131047, 503, PERMANENT),
        (131016, 400, TRANSIENT),
        (2, 403, TRANSIENT),
        (4, 429, TRANSIENT),
        (190, 500, SENDER_WIDE),
        (368, 400, SENDER_WIDE),
        (100, 401, PERMANENT),
        (132001, 404, PERMANENT),
    ],
)
def test_the_code_wins_over_the_http_status(
    code: int, http_status: int, expected: ErrorClass
) -> None:
    assert classify(code, http_status) is expected


@pytest.mark.parametrize(
    ("http_status", "expected"),
    [
        pytest.param(None, TRANSIENT, id="no-response-timeout-or-reset"),
        (500, TRANSIENT),
        (502, TRANSIENT),
        (503, TRANSIENT),
        (504, TRANSIENT),
        (599, TRANSIENT),
        (408, TRANSIENT),
        (429, TRANSIENT),
        (401, SENDER_WIDE),
        (403, SENDER_WIDE),
        (400, PERMANENT),
        (404, PERMANENT),
        (409, PERMANENT),
        (413, PERMANENT),
        (415, PERMANENT),
        (422, PERMANENT),
        (499, PERMANENT),
    ],
)
def test_without_a_code_the_http_status_decides(
    http_status: int | None, expected: ErrorClass
) -> None:
    assert classify(None, http_status) is expected
