#!/usr/bin/env python3
"""A TCP relay that breaks connections now and then, for the soak run.

usage: faults.py LISTEN_PORT TARGET_HOST:PORT PERCENT COUNTS_FILE

HTTP/1.1 on a kept-alive connection alternates a request and its answer. Of the
requests, PERCENT/2 % are cut before they reach the server (the connection is reset:
the write did not happen), and of the answers, PERCENT/2 % are cut before they reach
the client (the write happened, its answer was lost). Counts of each are written to
COUNTS_FILE as JSON when the relay stops (SIGTERM). Listens on 127.0.0.1 only.

It also counts the writes the server accepted, per key (path-style requests: the first
path segment is the bucket): a PUT of an object, a completed multipart upload (by upload
id: completing the same upload again writes nothing new) and a DELETE of an object. A
write counts when the server's answer says 2xx, whether or not the client heard it, so
a second write of a key shows even where the server keeps no versions (garage).
"""
import asyncio
import json
import random
import signal
import sys
from urllib.parse import parse_qs, unquote, urlsplit

COUNTS = {"requests": 0, "cut_requests": 0, "lost_answers": 0, "unreadable_answers": 0}
WRITES = {}  # key -> ["put" | "complete <upload id>" | "delete", ...]


def write_of(request_line):
    """(key, what) when a request line is an object write, else None."""
    parts = request_line.decode("latin-1").split(" ")
    if len(parts) != 3:
        return None
    method, target = parts[0], urlsplit(parts[1])
    query = parse_qs(target.query, keep_blank_values=True)
    segments = unquote(target.path).lstrip("/").split("/", 1)
    if len(segments) < 2 or not segments[1]:
        return None
    key = segments[1]
    if method == "PUT" and "partNumber" not in query and "uploadId" not in query:
        return key, "put"
    if method == "POST" and "uploadId" in query:
        return key, f"complete {query['uploadId'][0]}"
    if method == "DELETE" and "uploadId" not in query:
        return key, "delete"
    return None


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
        turn = {"last": "answer", "write": None}

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
                            # A body after "100 Continue" is no request line: the
                            # write it belongs to stays the one seen.
                            line = data.split(b"\r\n", 1)[0]
                            if line.endswith((b" HTTP/1.1", b" HTTP/1.0")):
                                turn["write"] = write_of(line)
                        else:
                            status = data[9:12]
                            if len(data) < 12 or not data.startswith(b"HTTP/1."):
                                COUNTS["unreadable_answers"] += 1
                            elif status[:1] == b"2" and turn["write"]:
                                key, what = turn["write"]
                                WRITES.setdefault(key, []).append(what)
                            if status[:1] != b"1":
                                turn["write"] = None
                        if random.random() < one_side:
                            COUNTS["cut_requests" if side == "request" else "lost_answers"] += 1
                            if side == "request":
                                turn["write"] = None  # it never reached the server
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
        json.dump(dict(COUNTS, writes=WRITES), f)


if __name__ == "__main__":
    asyncio.run(main())
