#!/usr/bin/env python3
"""Regenerates src/tap/o200k.bin from OpenAI's o200k_base.tiktoken.

Usage: scripts/o200k.py PATH/TO/o200k_base.tiktoken
(https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken,
sha256 446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d;
tiktoken is MIT-licensed.)

The .tiktoken file is one `base64(token) rank` line per token, ranks 0..n-1
in order. o200k.bin keeps the same tokens in rank order as `u8 length` +
bytes: 1.6 MB instead of 3.6 MB, read without base64 at load.
"""
import base64
import hashlib
import pathlib
import sys

SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"

src = pathlib.Path(sys.argv[1]).read_bytes()
if hashlib.sha256(src).hexdigest() != SHA256:
    sys.exit("not the o200k_base.tiktoken this was made from")
out = bytearray()
for n, line in enumerate(src.decode().splitlines()):
    b64, rank = line.split()
    assert int(rank) == n, "ranks must be 0..n-1 in order"
    token = base64.b64decode(b64)
    assert 0 < len(token) < 256
    out.append(len(token))
    out += token
pathlib.Path(__file__).resolve().parent.parent.joinpath("src/tap/o200k.bin").write_bytes(out)
print(f"{n + 1} tokens, {len(out)} bytes")
