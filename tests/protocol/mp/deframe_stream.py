# Runs under the MicroPython unix port: feeds STREAM (a file of bytes) to wire.Deframer in chunks
# of pseudo-random size and prints every frame it yields as hex, then the counters.
import wire

with open(STREAM, "rb") as fh:
    stream = fh.read()
d = wire.Deframer()
chunk = bytearray(64)
pos = 0
x = SEED & 0x7FFFFFFF
stalls = 0
while pos < len(stream) or stalls == 0:
    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    n = min(1 + x % 64, len(stream) - pos)
    chunk[0:n] = stream[pos:pos + n]
    taken = d.feed(chunk, n)
    pos += taken
    got = 0
    while True:
        t = d.next()
        if t < 0:
            break
        got += 1
        print(bytes(d.frame[:wire.frame_len(d.frame)]).hex())
    if pos >= len(stream):
        stalls += 1  # one last drain after the end
    elif taken == 0 and got == 0:
        print("HANG", pos)
        break
print("END", d.frames, d.bad_crc, d.skipped_bytes, d.bad_header)
