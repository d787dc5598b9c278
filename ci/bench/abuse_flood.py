#!/usr/bin/env python3
"""Load generator for ci/bench-abuse.sh: floods keygate with forged credentials.

Usage: abuse_flood.py HOST:PORT SECONDS CONNECTIONS SOURCES

Each connection is bound to one of SOURCES loopback addresses (127.0.1.0, 127.0.1.1,
...; one source means 127.0.0.2) and sends, round robin and as fast as it gets answers:
GET /api/v1/keys with a random well-formed API key (valid checksum, unknown id), the
refresh_token grant with a random well-formed refresh token, and a revocation of a random
key. Prints one JSON line: requests, seconds, rate, and answers by status.
Standard library only, so it needs no install.
"""

import asyncio
import base64
import hashlib
import json
import os
import sys
import time

ALPHABET = "0123456789abcdefghijklmnopqrstuv"


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def forged(prefix: str) -> str:
    acc = int.from_bytes(os.urandom(10), "big")
    ident = "".join(ALPHABET[(acc >> (i * 5)) & 31] for i in reversed(range(16)))
    body = f"{prefix}{ident}_{b64(os.urandom(32))}"
    return body + b64(hashlib.sha256(body.encode()).digest()[:4])


def request(i: int, host: str) -> bytes:
    kind = i % 3
    if kind == 0:
        return (f"GET /api/v1/keys HTTP/1.1\r\nHost: {host}\r\nx-api-key: {forged('kg_')}\r\n\r\n").encode()
    if kind == 1:
        body = f"grant_type=refresh_token&refresh_token={forged('kgr_')}"
        path = "/api/v1/auth/token"
    else:
        body = f"token={forged('kg_')}"
        path = "/api/v1/auth/revoke"
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, close = 0, False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v.strip())
        elif k == "connection" and v.strip().lower() == "close":
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def worker(host, port, source, deadline, counts, n):
    i = n
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            counts["connect_error"] = counts.get("connect_error", 0) + 1
            await asyncio.sleep(0.01)
            continue
        try:
            while time.monotonic() < deadline:
                writer.write(request(i, f"{host}:{port}"))
                i += 1
                status, close = await read_response(reader)
                counts[str(status)] = counts.get(str(status), 0) + 1
                if close:
                    break
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            counts["closed"] = counts.get("closed", 0) + 1
        finally:
            writer.close()


async def main():
    addr, seconds, conns, sources = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    host, port = addr.rsplit(":", 1)
    port = int(port)
    if sources == 1:
        srcs = ["127.0.0.2"]
    else:
        srcs = [f"127.0.{1 + i // 256}.{i % 256}" for i in range(sources)]
    counts: dict[str, int] = {}
    start = time.monotonic()
    deadline = start + seconds
    await asyncio.gather(*(worker(host, port, srcs[c % len(srcs)], deadline, counts, c) for c in range(conns)))
    took = time.monotonic() - start
    answered = sum(v for k, v in counts.items() if k.isdigit())
    print(json.dumps({"requests": answered, "seconds": round(took, 2), "rate": round(answered / took), "by_status": counts}))


asyncio.run(main())
