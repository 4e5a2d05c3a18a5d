# An emulated MCU for a board file under the MicroPython unix port (tests/firmware/test_board_failsafe.py):
# one module standing in for machine, rp2 and esp32. Pins record their mode, pull and driven level; an
# input reads what its sensor drives (`wire`), or with a broken wire (None) its pull level (None:
# floating). Everything else a board file touches (UART, WDT, PIO, PCNT, RMT) accepts any call.


class Pin:
    IN = "in"
    OUT = "out"
    PULL_UP = "up"
    PULL_DOWN = "down"
    made = []

    def __init__(self, n, mode=None, pull=None, *, value=None):
        self.n = n
        self.mode = mode
        self.pull = pull
        self.level = value
        self.wire = None
        Pin.made.append(self)

    def value(self, v=None):
        if v is not None:
            self.level = v
            return None
        if self.wire is not None:
            return self.wire
        if self.pull == Pin.PULL_UP:
            return 1
        if self.pull == Pin.PULL_DOWN:
            return 0
        return None


class _Any:
    def __init__(self, *a, **kw):
        pass

    def __getattr__(self, name):
        return lambda *a, **kw: 0


UART = WDT = Encoder = StateMachine = RMT = _Any
WDT_RESET = 3
PWRON_RESET = 1


class PIO:
    OUT_LOW = 0


def asm_pio(**kw):
    return lambda f: f  # the PIO program is never assembled here


def reset_cause():
    return 0


def reset():
    pass


def probe(name):
    """boards/<name>/board.py made on this MCU → what the rules are checked on (a dict, printed)."""
    import sys

    this = sys.modules["mcu_emu"]
    for m in ("machine", "rp2", "esp32"):
        sys.modules[m] = this
    sys.path.insert(0, "boards/" + name)
    import board

    hw = board.make()[0]
    pins = {}
    for k in dir(board):
        if k.startswith("PIN_"):
            pins[k[4:]] = getattr(board, k)
    made = {}
    for p in Pin.made:
        made[p.n] = p
    out = {"name": board.NAME, "pins": pins,
           "made": dict((n, (p.mode, p.pull, p.level)) for n, p in made.items()),
           # a board file without a level says nothing: read as active high
           "active": dict((k, getattr(board, k + "_ACTIVE", 1)) for k in ("PE", "CONFIRM", "BIN_FULL", "GATE", "STOP")),
           "ACTIVE_LOW": 0}
    hw.sample()  # every wire broken
    out["broken"] = (hw.pe, hw.confirm, hw.bin_full)
    seen = {}
    for k, attr in (("PE", "pe"), ("CONFIRM", "confirm"), ("BIN_FULL", "bin_full")):
        made[pins[k]].wire = out["active"][k]  # the sensor on: its output pulls the pin to its active level
        hw.sample()
        seen[k] = getattr(hw, attr)
        made[pins[k]].wire = None
    out["sensor_on"] = seen
    levels = []
    for on in (True, False):
        hw.out_gate(on, 0, 0)
        hw.out_stop(on, 0, 0)
        levels.append((on, made[pins["GATE"]].level, made[pins["STOP"]].level))
    out["levels"] = levels
    print(repr(out))
