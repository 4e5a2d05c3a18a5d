"""A batch closed, then a new device boot stores the next batch's events: every earlier link and
seal still verifies (a boot the close saw no row of, with rows now, is not one it left open)."""

from __future__ import annotations

import oldledger
from serialine.host import cli_batch


def test_a_close_then_a_new_boot_then_a_checkpoint_and_close_verify(tmp_path, capsys):
    path = tmp_path / "l.db"
    conn = oldledger.ledger(path, ("B1", "B2"))
    oldledger.run(conn, "B1", 4)
    assert cli_batch.main(["close", "B1", "--db", str(path), "--user", "qa"]) == 0, capsys.readouterr().err
    oldledger.run(conn, "B2", 4)  # boot 2: no row of it existed when B1 was sealed
    oldledger.close_and_verify(conn, path, capsys)
