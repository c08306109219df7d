#!/usr/bin/env python3
"""A TCP relay that breaks connections now and then, for the soak run.

usage: faults.py LISTEN_PORT TARGET_HOST:PORT PERCENT COUNTS_FILE

HTTP/1.1 on a kept-alive connection alternates a request and its answer. Of the
requests, PERCENT/2 % are cut before they reach the server (the connection is reset:
the write did not happen), and of the answers, PERCENT/2 % are cut before they reach
the client (the write happened, its answer was lost). Counts of each are written to
COUNTS_FILE as JSON when the relay stops (SIGTERM). Listens on 127.0.0.1 only.
"""
import asyncio
import json
import random
import signal
import sys

COUNTS = {"requests": 0, "cut_requests": 0, "lost_answers": 0}


async def main():
    port, target, percent, counts_file = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    host, target_port = target.rsplit(":", 1)
    one_side = percent / 200.0

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(target_port))
        except OSError:
            client_writer.close()
            return
        # Which way the connection last carried bytes: a chunk from the client after an
        # answer starts a request, a chunk from the server after a request an answer.
        turn = {"last": "answer"}

        def cut():
            for w in (client_writer, server_writer):
                try:
                    w.transport.abort()
                except Exception:
                    pass

        async def pipe(reader, writer, side):
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    if turn["last"] != side:
                        turn["last"] = side
                        if side == "request":
                            COUNTS["requests"] += 1
                        if random.random() < one_side:
                            COUNTS["cut_requests" if side == "request" else "lost_answers"] += 1
                            cut()
                            return
                    writer.write(data)
                    await writer.drain()
                writer.write_eof()
            except (ConnectionError, OSError, RuntimeError):
                cut()

        await asyncio.gather(
            pipe(client_reader, server_writer, "request"),
            pipe(server_reader, client_writer, "answer"),
        )
        for w in (client_writer, server_writer):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=1 << 20)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("faults ready", flush=True)
    async with server:
        await stop.wait()
    with open(counts_file, "w") as f:
        json.dump(COUNTS, f)


if __name__ == "__main__":
    asyncio.run(main())
