"""``passerelle retry`` and ``passerelle skip``: audited, all or nothing, and a retry really
gives a message a fresh attempt budget (the relayer's give-up counters start again)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from test_substrate_route import ALPHA, ASSETHUB, config_toml, load, message

from light_clients.hashing import keccak256
from relayer import operator
from relayer.config import ChainConfig
from relayer.families.substrate.delivery import SubstrateDelivery
from relayer.ledger import DiscoveredMessage, Ledger, MessageStatus, NewTransaction, open_ledger
from relayer.relay import MAX_DELIVERY_ATTEMPTS, OPERATOR_RETRY, Relayer

_S = MessageStatus
ROUTED = frozenset({ASSETHUB})  # where message() goes
PASSERELLE = str(Path(sys.executable).parent / "passerelle")


def attested(ledger: Ledger, nonces: range) -> list[str]:
    """Messages of ALPHA with these nonces, attested under one checkpoint."""
    raws = [message(nonce=n).encode() for n in nonces]
    ledger.record_discovered(
        [DiscoveredMessage(raw, 1, b"\x01" * 32, bytes([n]) * 32, 0) for n, raw in enumerate(raws)]
    )
    ids = ["0x" + keccak256(raw).hex() for raw in raws]
    ledger.transition(ids, MessageStatus.FINAL)
    checkpoint = ledger.save_checkpoint(
        ALPHA, b"\x11" * 32, b"\x33" * 32, max(nonces), block_number=1, block_hash=b"\x01" * 32
    )
    ledger.transition(ids, MessageStatus.ATTESTED, checkpoint_id=checkpoint)
    return ids


def status(ledger: Ledger, message_id: str) -> MessageStatus:
    record = ledger.get(message_id)
    assert record is not None
    return record.status


def test_a_retry_gives_a_message_given_up_a_fresh_attempt_budget(tmp_path: Path) -> None:
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ids = attested(ledger, range(7, 8))
        relayer = SimpleNamespace(ledger=ledger, confirm_timeout=120.0)
        delivery = SubstrateDelivery(cast(ChainConfig, None), cast(Relayer, relayer))
        for _ in range(MAX_DELIVERY_ATTEMPTS):
            delivery._fail_undelivered(ids)
            if (record := ledger.get(ids[0])) is not None and record.next_attempt_at:
                ledger.transition(ids, MessageStatus.ATTESTED)  # what the requeue does
        record = ledger.get(ids[0])
        assert record is not None and record.next_attempt_at is None  # given up
        assert record.reason is not None and "gave up" in record.reason

        moved = operator.retry(ledger, ids, routed=ROUTED)
        assert [m.as_json() for m in moved] == [{"id": ids[0], "was": "failed", "now": "attested"}]
        assert ledger.history(ids[0])[-1].reason == OPERATOR_RETRY
        delivery._fail_undelivered(ids)  # one more failure: retried later, not given up
        record = ledger.get(ids[0])
        assert record is not None and record.status == MessageStatus.FAILED
        assert record.next_attempt_at is not None and "gave up" not in (record.reason or "")


def test_a_skipped_message_goes_back_to_final_and_a_skip_is_audited(tmp_path: Path) -> None:
    with open_ledger(tmp_path / "ledger.db") as ledger:
        first, second = attested(ledger, range(3, 5))
        moved = operator.skip(
            ledger, [first, second.upper().replace("0X", "0x")], " spam\n  burst "
        )
        assert [(m.was, m.now) for m in moved] == [
            (MessageStatus.ATTESTED, MessageStatus.SKIPPED)
        ] * 2
        assert ledger.history(first)[-1].reason == "skipped by the operator: spam burst"
        operator.retry(ledger, [first], routed=ROUTED)
        assert status(ledger, first) == MessageStatus.FINAL
        trail = [(e.to_status, e.reason) for e in ledger.history(first)][-2:]
        assert trail[0] == (MessageStatus.DISCOVERED, OPERATOR_RETRY)
        assert trail[1][0] == MessageStatus.FINAL


def test_one_id_that_cannot_move_refuses_the_whole_command(tmp_path: Path) -> None:
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ready, done = attested(ledger, range(1, 3))
        ledger.transition([done], MessageStatus.DELIVERED)
        with pytest.raises(operator.OperatorRefused) as refused:
            operator.skip(ledger, [ready, done, "0x" + "ab" * 32, "0x12"], "no")
        lines = str(refused.value).splitlines()
        assert lines[0] == f"{done}: is delivered"
        assert lines[1] == f"0x{'ab' * 32}: no such message in the ledger"
        assert lines[2].startswith("0x12: ") and len(lines) == 3
        assert status(ledger, ready) == MessageStatus.ATTESTED  # nothing written
        with pytest.raises(operator.OperatorRefused, match="is attested"):
            operator.retry(ledger, [ready], routed=ROUTED)
        with pytest.raises(operator.OperatorRefused, match="give a --reason"):
            operator.skip(ledger, [ready], "  \n")


def test_the_commands_print_one_line_per_move_and_refuse_in_one_line_each(
    tmp_path: Path,
) -> None:
    config = load(tmp_path, config_toml())
    with open_ledger(config.ledger) as ledger:
        (ready,) = attested(ledger, range(5, 6))
    path = str(tmp_path / "passerelle.toml")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PASSERELLE, *args, "--config", path], capture_output=True, text=True, check=False
        )

    skipped = run("skip", ready, "--reason", "operator test", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout) == {"id": ready, "was": "attested", "now": "skipped"}
    unknown = run("retry", ready, "0x" + "cd" * 32)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr == f"passerelle: 0x{'cd' * 32}: no such message in the ledger\n"
    retried = run("retry", ready)
    assert (retried.returncode, retried.stdout) == (0, f"{ready}  skipped → final\n")
    no_reason = run("skip", ready)
    assert no_reason.returncode == 2 and "Traceback" not in no_reason.stderr


def test_a_message_in_flight_cannot_be_skipped_and_no_route_cannot_be_retried(
    tmp_path: Path,
) -> None:
    """A message in a pending transaction may still land (wait for its outcome); a message
    to a destination the config does not route would wait for ever after a retry."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        (flying,) = attested(ledger, range(1, 2))
        record = ledger.get(flying)
        assert record is not None
        ledger.record_transaction(
            NewTransaction(
                chain=record.destination, hash=b"\x22" * 32, sender=b"\x01" * 20, nonce=0
            ),
            [flying],
        )
        with pytest.raises(operator.OperatorRefused, match="is submitted"):
            operator.skip(ledger, [flying], "in flight")
        (parked,) = attested(ledger, range(2, 3))
        operator.skip(ledger, [parked], "park it")
        with pytest.raises(operator.OperatorRefused, match=f"destination {ASSETHUB} has no route"):
            operator.retry(ledger, [parked], routed=frozenset())
        assert status(ledger, parked) == MessageStatus.SKIPPED


def test_a_relayer_outpaced_by_the_operator_records_the_rest_and_goes_on(
    tmp_path: Path,
) -> None:
    """An operator skips a message of a proposal that then times out, or that the committee
    then refunds: the relayer leaves the skipped one as it is and records the others — in one
    write, never stopping (it used to raise and, for the refund, on every restart)."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ids = attested(ledger, range(1, 4))
        operator.skip(ledger, [ids[1]], "stuck")
        relayer = SimpleNamespace(ledger=ledger, confirm_timeout=120.0)
        delivery = SubstrateDelivery(cast(ChainConfig, None), cast(Relayer, relayer))
        delivery._fail_undelivered(ids)
        assert [status(ledger, i) for i in ids] == [_S.FAILED, _S.SKIPPED, _S.FAILED]
        refunded = attested(ledger, range(5, 7))
        operator.skip(ledger, [refunded[0]], "stuck")
        delivery._record_refunded(cast(ChainConfig, SimpleNamespace(name="hub")), refunded)
        assert [status(ledger, i) for i in refunded] == [_S.SKIPPED, _S.FAILED]
        assert "refunded" in (ledger.history(refunded[1])[-1].reason or "")
