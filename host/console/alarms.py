"""What an alarm means and what the operator does about it, by the alarm's name (the device's
`Alarm` enum in protocol/schema.py and the agent's and service's alarm kinds in the ledger's
alarm_log). An alarm not listed here is shown with its own detail and "call the line engineer"."""

from __future__ import annotations

UNKNOWN = ("an alarm this console has no text for", "read its detail; call the line engineer")

ALARMS: dict[str, tuple[str, str]] = {
    # the device (firmware)
    "DOUBLE_DETECT": ("two packs closer together than the minimum pitch at the photo-eye",
                      "check the infeed spacing; clear to restart"),
    "REJECT_UNCONFIRMED": ("the gate fired but the confirm sensor did not see the pack in the chute",
                           "find the pack (chute, belt, floor), check the reject bin and the gate; clear to restart"),
    "REJECT_STREAK": ("too many rejects in a row: the line stopped itself",
                      "look at the last rejects' reasons below (coder, camera, codes); fix the cause, then clear"),
    "BIN_FULL": ("the reject bin is full", "empty the reject bin, then clear"),
    "ENCODER_STALL": ("the belt stands while the drive should run", "check the belt, the drive and the encoder"),
    "LINK_LOST": ("the device lost its link to the host agent", "check the agent is running and the cable; clear"),
    "BUFFER_OVERFLOW": ("the device could not keep its events for the host: it rejected every open pack",
                        "the host agent fell behind; check it is running; clear to restart"),
    "WATCHDOG_RESET": ("the line device restarted after a hang", "packs in flight were rejected; call the engineer"),
    "CONFIG_INVALID": ("the device refused its configuration", "the line engineer must fix the line file"),
    # the agent and the service
    "CODER_LOST": ("the connection to the coder is gone: the line is stopped",
                   "check the coder is on and its network cable; the agent reconnects by itself, then clear"),
    "CODER_BACK": ("the coder is connected again", "clear to restart the line"),
    "CAMERA_LOST": ("the connection to the camera is gone: the line is stopped",
                    "check the camera is on and its network cable; the agent reconnects by itself, then clear"),
    "CAMERA_BACK": ("the camera is connected again", "clear to restart the line"),
    "CODER_RAN_DRY": ("the coder printed nothing on a trigger", "check the coder's ink and job; clear to restart"),
    "CODER_IN_DOUBT": ("the coder did not answer in time: its queue is unknown and will be reset",
                       "wait for the belt to stand; then clear"),
    "CODER_REFUSED": ("the coder refused codes", "check the coder's screen for its error"),
    "CODER_CLEAR_FAILED": ("the coder did not confirm emptying its queue", "check the coder; the agent retries"),
    "CODER_FILL_HELD": ("too many prints not yet reported by the device", "check the device link"),
    "PRINT_MISMATCH": ("the coder printed another code than the one the pack was given: the pack is rejected",
                       "check the coder's job and queue; clear to restart"),
    "PRINT_LOST": ("a print report was lost; later packs keep their own codes", "none; the engineer reviews it"),
    "PAIRING_LOST": ("camera results no longer match the packs (a missed trigger)",
                     "the agent re-pairs once the belt stands; check the camera trigger; clear"),
    "SERIALS_EXHAUSTED": ("the batch's serial pool is used up", "the engineer adds serials; the line cannot go on"),
    "SERIALS_LOW": ("the batch's serial pool is running low", "tell the line engineer"),
    "SSCC_EXHAUSTED": ("no SSCC left for a case or pallet: the line is stopped", "the engineer must act"),
    "BATCH_ENDED": ("the batch was closed under the running line", "select the next batch"),
    "OUTCOME_UNKNOWN": ("a pack's outcome was lost with the device's memory",
                        "QA resolves the unit before the batch can close"),
    "EVENTS_LOST": ("events of the device are missing", "QA resolves the units named"),
    "QUARANTINED": ("the device sent a value out of range; it was kept, not applied", "call the engineer"),
    "LEDGER_BUSY": ("the ledger was busy; the agent retries", "none if it clears; else call the engineer"),
    "RESUMING": ("the agent restarted and is taking over the running device", "wait; then clear"),
    "RESUMED": ("the agent took over the device again", "clear to restart the line"),
    "CORRELATION": ("a pack got no camera result in its time window: it is rejected",
                    "none for one; many in a row: check the camera's trigger and its network"),
    "OUTCOME_LOST": ("a pack's outcome was lost", "QA resolves the unit before the batch can close"),
    "PRINT_QUALITY_DRIFT": ("the print quality of the last reads is drifting towards the minimum grade",
                            "clean the printhead; check the ink and the coder's settings"),
    "AUDIT_CHECKPOINT_FAILED": ("the audit trail could not seal the logs so far (its detail says why); the agent"
                                " tries again", "none if AUDIT_CHECKPOINT_SEALED follows; else call the engineer"),
    "AUDIT_CHECKPOINT_SEALED": ("the audit trail sealed the logs again after a failed checkpoint", "none"),
    # the coder and reader drivers
    "DISCONNECTED": ("a coder or camera closed its connection", "see the LOST alarm beside it"),
    "RESYNC": ("the agent is reconnecting to a coder or camera", "none; it retries by itself"),
    "NO_REPLY": ("a coder or camera did not answer in time", "check it is on and not in an error screen"),
    "MALFORMED": ("a coder or camera sent a line the agent cannot read (ignored)",
                  "none for one; many: check the device's protocol settings"),
    "UNEXPECTED_REPLY": ("a coder or camera answered something the agent did not ask", "call the line engineer"),
    "TOO_LONG": ("a coder or camera sent an over-long line (ignored)", "call the line engineer"),
    "NOT_RUNNING": ("the coder is not running its print job", "start the job on the coder"),
    "LOAD_REFUSED": ("the coder refused the next code", "check the coder's screen for its error"),
}


def explain(kind: str) -> tuple[str, str]:
    return ALARMS.get(str(kind), UNKNOWN)
