# ESP32 adapter. No hard IRQs on ESP32, so nothing timing-critical runs in Python callbacks:
# the PCNT unit (machine.Encoder) counts the encoder in hardware, RMT channels shape the
# coder/camera trigger pulses. Link: UART2 (or UART0/USB-serial with LINK = "usb").
from micropython import const
import esp32
import machine
import time

NAME = "esp32"
DEVICE_ID = "esp32-1"
LINK = "uart"

# Pin map (GPIO numbers)
PIN_UART_TX = const(17)
PIN_UART_RX = const(16)
PIN_ENC_A = const(22)  # not 34..39: input-only, no pull-ups
PIN_ENC_B = const(23)
PIN_PE = const(32)
PIN_CONFIRM = const(33)
PIN_BIN_FULL = const(25)
PIN_CODER = const(26)
PIN_CAMERA = const(27)
PIN_GATE = const(18)  # not 14: it toggles at reset
PIN_STOP = const(19)  # not 12: a strapping pin (flash voltage)
PULSE_US = const(500)
# Fail-safe wiring (docs/wiring.md "Fail-safe wiring"), checked by tests/firmware/test_board_failsafe.py:
# the pin level (0 or 1) at which each signal is active; the adapter reads level ^ X_ACTIVE ^ 1.
PE_ACTIVE = const(0)  # NPN sensors pull the pin low when active; the pull-up reads a broken wire inactive
CONFIRM_ACTIVE = const(0)
BIN_FULL_ACTIVE = const(0)
GATE_ACTIVE = const(0)  # divert = de-energised: no power, a reset or a broken wire sends packs to reject
STOP_ACTIVE = const(0)  # the run permissive: high = run; no power, a reset or a broken wire stops the line
_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)


def ticks_add(a, b):
    return (a + b) & _MASK


def ticks_diff(a, b):
    d = (a - b) & _MASK
    if d > _HALF:
        d = d - _MASK - 1
    return d


class UartPort:
    def __init__(self, uart_id):
        self.uart = machine.UART(uart_id, 115200, tx=PIN_UART_TX, rx=PIN_UART_RX, timeout=0,
                                 rxbuf=1024, txbuf=1024)

    def readinto(self, buf):
        return self.uart.readinto(buf)

    def write(self, buf, n):
        self.uart.write(memoryview(buf)[:n])


class Esp32Board:
    NAME = NAME

    def __init__(self):
        enc_a = machine.Pin(PIN_ENC_A, machine.Pin.IN, machine.Pin.PULL_UP)  # open-collector encoders too
        enc_b = machine.Pin(PIN_ENC_B, machine.Pin.IN, machine.Pin.PULL_UP)
        self.enc = machine.Encoder(0, enc_a, enc_b, filter_ns=1000)
        # RMT at 1 us resolution: one (high, low) pulse per trigger, sent by hardware
        self.coder = esp32.RMT(0, pin=machine.Pin(PIN_CODER), resolution_hz=1_000_000)
        self.camera = esp32.RMT(1, pin=machine.Pin(PIN_CAMERA), resolution_hz=1_000_000)
        self.pulse = (PULSE_US, 1)  # durations, preallocated
        self.pe_pin = machine.Pin(PIN_PE, machine.Pin.IN, machine.Pin.PULL_UP)
        self.confirm_pin = machine.Pin(PIN_CONFIRM, machine.Pin.IN, machine.Pin.PULL_UP)
        self.bin_pin = machine.Pin(PIN_BIN_FULL, machine.Pin.IN, machine.Pin.PULL_UP)
        self.gate_pin = machine.Pin(PIN_GATE, machine.Pin.OUT, value=0)  # as in reset: the reject path
        self.stop_pin = machine.Pin(PIN_STOP, machine.Pin.OUT, value=0)  # stop, until the core starts the line
        self.out_gate(False, 0, 0)  # the core starts with the gate at rest: the pass path, energised
        self.pos = 0
        self.pe = 0
        self.confirm = 0
        self.bin_full = 0
        self.ticks_add = ticks_add
        self.ticks_diff = ticks_diff

    def now(self):
        return time.ticks_us() & _MASK

    def sample(self):
        self.pos = self.enc.value() & _MASK
        self.pe = self.pe_pin.value() ^ PE_ACTIVE ^ 1
        self.confirm = self.confirm_pin.value() ^ CONFIRM_ACTIVE ^ 1
        self.bin_full = self.bin_pin.value() ^ BIN_FULL_ACTIVE ^ 1

    def out_coder(self, t, pos):
        self.coder.write_pulses(self.pulse, True)

    def out_camera(self, t, pos):
        self.camera.write_pulses(self.pulse, True)

    def out_gate(self, on, t, pos):
        self.gate_pin.value((1 if on else 0) ^ GATE_ACTIVE ^ 1)

    def out_stop(self, on, t, pos):
        self.stop_pin.value((1 if on else 0) ^ STOP_ACTIVE ^ 1)


def reset_cause():
    c = machine.reset_cause()
    if c == machine.WDT_RESET:
        return 2
    if c == machine.PWRON_RESET:
        return 1
    return 0


def make():
    hw = Esp32Board()
    port = UartPort(0 if LINK == "usb" else 2)
    return hw, port, machine.WDT(timeout=2000), reset_cause()


def reset():
    machine.reset()
