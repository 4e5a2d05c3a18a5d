# Raspberry Pi Pico (RP2040) adapter. Precision does not depend on Python latency where it
# matters: PIO state machines count the encoder and shape the coder/camera trigger pulses;
# the scan loop only reads the counter and starts pulses. Link: UART0 or USB-CDC.
from micropython import const
import machine
import rp2
import sys
import time

NAME = "rpi_pico"
DEVICE_ID = "pico-1"
LINK = "uart"  # "uart" (UART0 on GP0/GP1) or "usb" (USB-CDC, the REPL port)

# Pin map (GPIO numbers)
PIN_UART_TX = const(0)
PIN_UART_RX = const(1)
PIN_ENC_A = const(2)  # encoder phase A (counted by PIO)
PIN_ENC_B = const(3)  # encoder phase B (direction, not used: conveyors run one way)
PIN_PE = const(4)  # product photo-eye
PIN_CONFIRM = const(5)  # reject-confirm sensor
PIN_BIN_FULL = const(6)
PIN_CODER = const(10)  # print trigger pulse
PIN_CAMERA = const(11)  # camera trigger pulse
PIN_GATE = const(12)  # reject gate (held for the dwell)
PIN_STOP = const(13)  # line stop to the PLC
PULSE_US = const(500)  # trigger pulse width
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


@rp2.asm_pio()
def _count_edges():
    # X counts down once per rising edge of phase A; the CPU reads it with mov(isr, x); push.
    label("loop")
    wait(0, pin, 0)
    wait(1, pin, 0)
    jmp(x_dec, "loop")


@rp2.asm_pio(set_init=rp2.PIO.OUT_LOW)
def _pulse():
    # One pulse per word put: high for that many loop iterations (2 cycles each), then low.
    pull(block)
    mov(x, osr)
    set(pins, 1)
    label("hold")
    jmp(x_dec, "hold")
    set(pins, 0)


class UartPort:
    def __init__(self):
        self.uart = machine.UART(0, 115200, tx=machine.Pin(PIN_UART_TX), rx=machine.Pin(PIN_UART_RX),
                                 timeout=0, rxbuf=1024, txbuf=1024)

    def readinto(self, buf):
        return self.uart.readinto(buf)

    def write(self, buf, n):
        self.uart.write(memoryview(buf)[:n])


class UsbPort:
    """USB-CDC (the REPL's port): raw bytes, Ctrl-C disabled so binary frames pass."""

    def __init__(self):
        import micropython
        import select

        micropython.kbd_intr(-1)
        self.poller = select.poll()
        self.poller.register(sys.stdin, select.POLLIN)
        self.out = sys.stdout.buffer

    def readinto(self, buf):
        n = 0
        while n < len(buf) and self.poller.poll(0):
            buf[n] = sys.stdin.buffer.read(1)[0]
            n += 1
        return n

    def write(self, buf, n):
        self.out.write(memoryview(buf)[:n])


class PicoBoard:
    NAME = NAME

    def __init__(self):
        freq = 125_000_000
        enc_a = machine.Pin(PIN_ENC_A, machine.Pin.IN, machine.Pin.PULL_UP)  # open-collector encoders too
        self.enc = rp2.StateMachine(0, _count_edges, freq=freq, in_base=enc_a)
        self.enc.active(1)
        width = PULSE_US * (freq // 1_000_000) // 2
        self.coder = rp2.StateMachine(1, _pulse, freq=freq, set_base=machine.Pin(PIN_CODER))
        self.camera = rp2.StateMachine(2, _pulse, freq=freq, set_base=machine.Pin(PIN_CAMERA))
        self.coder.active(1)
        self.camera.active(1)
        self.width = width
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
        sm = self.enc
        sm.exec("mov(isr, x)")
        sm.exec("push()")
        self.pos = (-sm.get()) & _MASK  # X counts down from 0; two's complement word
        self.pe = self.pe_pin.value() ^ PE_ACTIVE ^ 1
        self.confirm = self.confirm_pin.value() ^ CONFIRM_ACTIVE ^ 1
        self.bin_full = self.bin_pin.value() ^ BIN_FULL_ACTIVE ^ 1

    def out_coder(self, t, pos):
        self.coder.put(self.width)

    def out_camera(self, t, pos):
        self.camera.put(self.width)

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
    hw = PicoBoard()
    port = UsbPort() if LINK == "usb" else UartPort()
    return hw, port, machine.WDT(timeout=2000), reset_cause()


def reset():
    machine.reset()
