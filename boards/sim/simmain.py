# The firmware on the unix port: `micropython simmain.py LINK_TTY SIM_TTY [options]`
#   --realtime          wall clock (default: virtual time, lockstep with the simulator)
#   --cfg PATH          configuration file (default serialine.cfg in the working directory)
#   --device-id ID      --wdt-ms MS (0 = off)
#   --reset-cause N     ResetCause reported at HELLO (2 = WATCHDOG after a SimWDT exit)
# The sim channel (SIM_TTY, a second pty, or `fd:R,W`: a pipe pair the simulator passed, R non-blocking)
# carries text lines, see boards/sim/README.md.
from array import array
import select
import sys
import time

import board
import device
import link


def main(argv):
    link_path, sim_path = argv[0], argv[1]
    virtual = "--realtime" not in argv
    opt = {"--cfg": "serialine.cfg", "--device-id": "sim-1", "--wdt-ms": "0",
           "--reset-cause": "1"}
    for i, a in enumerate(argv):
        if a in opt:
            opt[a] = argv[i + 1]
    b = board.SimBoard(virtual=virtual)
    port = link.open_tty(link_path)
    if sim_path.startswith("fd:"):  # pipes wake the reader at once; a pty's data goes through a kernel worker
        r, w = sim_path[3:].split(",")
        sim, sim_out = open(int(r), "rb"), open(int(w), "wb")
    else:
        sim = sim_out = link.open_tty(sim_path)
    cause = int(opt["--reset-cause"])  # the simulator knows why it restarted us
    dev = device.Device(b, port, device_id=opt["--device-id"], cfg_path=opt["--cfg"],
                        reset_cause=cause)
    if dev.boot_note:
        print("BOOT", dev.boot_note)
    wdt = b.wdt(int(opt["--wdt-ms"])) if int(opt["--wdt-ms"]) else None
    print("READY boot_id=%d" % dev.boot_id)
    poller = select.poll()
    poller.register(port, select.POLLIN)
    poller.register(sim, select.POLLIN)
    rx = b""
    buf = bytearray(256)
    due = array("i", [0, 0])  # core.next_due: where the simulator may jump to
    sent = 0  # output edges already reported
    held = []  # virtual time: host messages as they came, applied at a scan (see release)
    if virtual:
        dev.handler = lambda t, frame: held.append((t, bytes(frame)))
    while not dev.reboot:
        n = sim.readinto(buf)
        if n:
            rx += bytes(buf[:n])
        stepped = False
        while b"\n" in rx:
            line, rx = rx.split(b"\n", 1)
            w = line.split()
            if not w:
                continue
            if w[0] == b"S":  # virtual step: t pos pe confirm bin [upto]
                b.t, b.pos = int(w[1]), int(w[2])
                b.pe, b.confirm, b.bin_full = int(w[3]), int(w[4]), int(w[5])
                dev.link.poll(time.ticks_ms(), dev.handler)  # what has come is held first
                release(dev, held, int(w[6]) if len(w) > 6 else -1)
                dev.scan(b.t, b.pos, b.pe, b.confirm, b.bin_full, time.ticks_ms())
                sent = report(sim_out, b, sent)
                c = dev.core
                c.next_due(due)
                lk = dev.link  # its event mark: the seq its next event gets (all before it sent or queued)
                sim_out.write(b"K %d %d %d %d %d %d %d %d\n" % (c.state, c.count, c.alarms, lk.queue_fill,
                                                             due[0], due[1], dev.verdicts_in,
                                                             (lk.base + lk.count) & 0xFF))
                stepped = True
            elif w[0] == b"I":  # real-time inputs: pe confirm bin [pos]
                b.pe, b.confirm, b.bin_full = int(w[1]), int(w[2]), int(w[3])
                if len(w) > 4:
                    b.pos = int(w[4])
            elif w[0] == b"Q":
                dev.reboot = True
        if wdt:
            wdt.feed()
            wdt.check()
        if virtual:
            if not stepped:  # keep the link alive between steps
                dev.link.poll(time.ticks_ms(), dev.handler)
                if dev.pcount:
                    dev._flush()
                poller.poll(2)
        else:
            dev.scan(b.now(), b.pos, b.pe, b.confirm, b.bin_full, time.ticks_ms())
            sent = report(sim_out, b, sent)
    print("EXIT")


def release(dev, held, upto):
    """Apply the host messages held, in order, until `upto` VERDICTs have been applied this boot
    (-1: all). The simulator says when its host's answer to a camera result lands, so a line stop
    sent before that verdict lands at the same virtual time, and what came after it waits."""
    while held and (upto < 0 or dev.verdicts_in < upto):
        t, frame = held.pop(0)
        dev.handle(t, frame)


def report(sim, b, sent):
    while sent < b.n:
        i = sent % b.cap
        sim.write(b"E %d %d %d\n" % (b.kind[i], b.et[i], b.ep[i]))
        sent += 1
    return sent


main(sys.argv[1:])
