#!/usr/bin/env python3
"""Writes the small seed corpus of corpus/<target>/ from the FastCGI vectors
and captures (each cut to at most 4 KiB, so libFuzzer keeps inputs short).
Files a fuzz run found worth keeping are added by hand as regression-*."""
import glob
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAX = 4096

streams = {}
for path in sorted(glob.glob(os.path.join(ROOT, "protocol-specs/vectors/fastcgi/*.bin"))):
    if not path.endswith(".out.bin"):
        streams["vec-" + os.path.basename(path)[:-4]] = open(path, "rb").read()
for prefix in ("nginx-fastcgi-", "apache-fastcgi-", "apache-authnz-", "lighttpd-fastcgi-"):
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/vectors/captured", prefix + "*.bin"))):
        streams["cap-" + os.path.basename(path)[:-4]] = open(path, "rb").read()


def params_blocks(stream):
    """The content of every non-empty PARAMS record."""
    at, out = 0, []
    while at + 8 <= len(stream):
        _, kind, _, clen, plen, _ = struct.unpack(">BBHHBB", stream[at:at + 8])
        if kind == 4 and clen:
            out.append(stream[at + 8:at + 8 + clen])
        at += 8 + clen + plen
    return out


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data[:MAX])


for name, data in streams.items():
    write("fastcgi_record", name, data)
    # control byte: multiplexing on, 3 read sizes (8, 1, 200 bytes)
    write("fastcgi_conn", name, bytes([0x03, 7, 0, 199]) + data)
    for i, block in enumerate(params_blocks(data)):
        write("fastcgi_nv", "%s-%d" % (name, i), block)
print("seeded", sum(len(f) for _, _, f in os.walk(os.path.join(HERE, "corpus"))), "files")
