# The sim board: the MicroPython unix port standing in for a line device. No machine.Pin/UART
# here, so inputs are levels set by the line simulator and outputs are recorded edges with their
# exact (virtual) time and position. The clock and the encoder wrap at 2**30 like a real board's.
from micropython import const
from array import array
import time

_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)
OUT_CODER = const(1)
OUT_CAMERA = const(2)
OUT_GATE_OPEN = const(3)
OUT_GATE_CLOSE = const(4)
OUT_STOP_ON = const(5)
OUT_STOP_OFF = const(6)
OUT_NAMES = ("", "coder", "camera", "gate_open", "gate_close", "stop_on", "stop_off")
NAME = "sim"


def ticks_add(a, b):
    return (a + b) & _MASK


def ticks_diff(a, b):
    d = (a - b) & _MASK
    if d > _HALF:
        d = d - _MASK - 1
    return d


class SimBoard:
    """virtual=True: the simulator sets t and pos; False: t from the wall clock (ticks_us)."""

    NAME = NAME

    def __init__(self, virtual=True, edges=4096, t0=0):
        self.virtual = virtual
        self.t = t0 & _MASK
        self.pos = 0
        self.pe = 0
        self.confirm = 0
        self.bin_full = 0
        self.cap = edges
        self.kind = bytearray(edges)  # a ring of output edges: kind, time, position
        self.et = array("i", bytes(4 * edges))
        self.ep = array("i", bytes(4 * edges))
        self.n = 0  # edges recorded in total (ring index n % cap)
        self.ticks_add = ticks_add
        self.ticks_diff = ticks_diff

    def sample(self):
        """Inputs are already latched: the simulator sets pos/pe/confirm/bin_full."""

    def now(self):
        if self.virtual:
            return self.t
        return time.ticks_us() & _MASK

    def _edge(self, kind, t, pos):
        i = self.n % self.cap
        self.kind[i] = kind
        self.et[i] = t
        self.ep[i] = pos
        self.n += 1

    def out_coder(self, t, pos):
        self._edge(OUT_CODER, t, pos)

    def out_camera(self, t, pos):
        self._edge(OUT_CAMERA, t, pos)

    def out_gate(self, on, t, pos):
        self._edge(OUT_GATE_OPEN if on else OUT_GATE_CLOSE, t, pos)

    def out_stop(self, on, t, pos):
        self._edge(OUT_STOP_ON if on else OUT_STOP_OFF, t, pos)

    def wdt(self, timeout_ms):
        return SimWDT(timeout_ms, self)


class SimWDT:
    """machine.WDT for the unix port: the process ends when it is not fed in time."""

    def __init__(self, timeout_ms, board):
        self.timeout = timeout_ms
        self.board = board
        self.last = time.ticks_ms()

    def feed(self):
        self.last = time.ticks_ms()

    def check(self):
        if time.ticks_diff(time.ticks_ms(), self.last) > self.timeout:
            import sys

            print("WATCHDOG RESET")
            sys.exit(3)
