# Runs under the MicroPython unix port: checks firmware/wire.py against the shared vectors.
# Expects VECTORS (path of vectors.json) to be defined before this text. Prints one line per
# failure and finally "checked N". Out-of-range enum vectors: dec_<name> returns their bad_field.
import json

import wire

with open(VECTORS) as fh:
    vectors = json.load(fh)
buf = bytearray(wire.MAX_FRAME)
out = [None] * wire.MAX_FIELDS
deframer = wire.Deframer()
checked = 0
for v in vectors:
    name = v["name"].lower()
    frame = bytes.fromhex(v["hex"])
    fields = v["fields"]
    # encode
    n = getattr(wire, "enc_" + name)(buf, v["seq"], v["ack"], *fields)
    if bytes(buf[:n]) != frame:
        print("ENC", v["name"], v["case"], bytes(buf[:n]).hex())
    # stream-decode, then decode the fields
    taken = deframer.feed(frame, len(frame))
    t = deframer.next()
    if taken != len(frame) or t != v["msg_type"]:
        print("DEFRAME", v["name"], v["case"], taken, t)
        continue
    f = deframer.frame
    if (wire.frame_type(f), wire.frame_seq(f), wire.frame_ack(f), wire.frame_len(f)) != (
            v["msg_type"], v["seq"], v["ack"], len(frame)):
        print("HEADER", v["name"], v["case"])
    for i in range(len(out)):
        out[i] = None
    bad = getattr(wire, "dec_" + name)(f, out)
    if out[:len(fields)] != fields:
        print("DEC", v["name"], v["case"], out[:len(fields)])
    if bad != v.get("bad_field", -1):  # an out-of-range enum is refused, naming its field
        print("ENUM", v["name"], v["case"], bad)
    if wire.is_sequenced(v["msg_type"]) != (getattr(wire, "MSG_" + v["name"]) in SEQUENCED):
        print("SEQ", v["name"])
    checked += 1
print("checked", checked, "frames", deframer.frames, "bad_crc", deframer.bad_crc)
