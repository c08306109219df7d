#!/usr/bin/env python3
"""A TCP relay that adds a round trip without limiting bandwidth, to model a WAN link.

usage: relay.py LISTEN_PORT TARGET_HOST:PORT RTT_MS

Every chunk read from one side is written to the other side RTT_MS/2 later, in order;
chunks are never held back by the ones before them beyond that, so throughput is not
capped (kernel traffic shaping, `tc netem`, is not available on these machines).
Listens on 127.0.0.1 only.
"""
import asyncio
import sys
import time


async def pipe(reader, writer, delay):
    queue = asyncio.Queue()

    async def deliver():
        while True:
            at, data = await queue.get()
            if data is None:
                break
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            queue.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((0, None))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def main():
    port, target, rtt_ms = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    host, target_port = target.rsplit(":", 1)
    delay = rtt_ms / 2000.0

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(target_port))
        except OSError:
            client_writer.close()
            return
        # The connection itself takes a round trip, as over a real link.
        await asyncio.sleep(2 * delay)
        await asyncio.gather(
            pipe(client_reader, server_writer, delay),
            pipe(server_reader, client_writer, delay),
        )
        for w in (client_writer, server_writer):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=1 << 20)
    print("relay ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
