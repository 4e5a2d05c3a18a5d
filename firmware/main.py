# Entry point on a board (copied as main.py next to the board's board.py). The board module
# gives the hardware adapter, the link port, the watchdog and the reset cause.
import time

import board
import device


def run():
    hw, port, wdt, reset_cause = board.make()
    dev = device.Device(hw, port, device_id=board.DEVICE_ID, reset_cause=reset_cause)
    if dev.boot_note:  # no usable configuration: boot unconfigured and say why
        print("BOOT", dev.boot_note)
    while not dev.reboot:
        hw.sample()  # latch encoder position and input levels into hw.pos/pe/confirm/bin_full
        dev.scan(hw.now(), hw.pos, hw.pe, hw.confirm, hw.bin_full, time.ticks_ms())
        wdt.feed()
    board.reset()


run()
