#!/usr/bin/env python3
"""Network fronts for the tests, on 127.0.0.1: a CONNECT forward proxy and a TLS front.

  netfront.py proxy PORT LOG [--auth USER:PASS] [--answer CODE]
      A forward proxy that serves CONNECT only, as corporate proxies do for TLS. Every
      CONNECT is written to LOG as `CONNECT host:port <code> <proxy-authorization>`. Host
      names ending in `.test` are resolved to 127.0.0.1 (only the proxy knows them, so a
      request that bypasses it cannot connect). With --auth, a CONNECT without those Basic
      credentials gets 407. With --answer, every CONNECT gets that status (502: the proxy
      cannot reach the endpoint).

  netfront.py tls PORT CERT KEY UPSTREAM_PORT
      Terminates TLS with CERT/KEY and forwards the bytes to 127.0.0.1:UPSTREAM_PORT.

Both print `ready` on stdout once listening.
"""

import asyncio
import base64
import ssl
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def splice(client_reader, client_writer, upstream_reader, upstream_writer):
    await asyncio.gather(
        pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer)
    )


def proxy(port, log_path, auth, answer):
    log = open(log_path, "a", buffering=1)
    expected = "Basic " + base64.b64encode(auth.encode()).decode() if auth else None

    async def handle(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = (lines[0].split(" ") + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        given = headers.get("proxy-authorization", "-")

        def reply(code, reason):
            log.write(f"{method} {target} {code} {given}\n")
            writer.write(f"HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\n\r\n".encode())

        if method != "CONNECT":
            reply(405, "Method Not Allowed")
            writer.close()
            return
        if expected and given != expected:
            reply(407, "Proxy Authentication Required")
            writer.close()
            return
        if answer:
            reply(answer, "Bad Gateway" if answer == 502 else "Refused")
            writer.close()
            return
        host, _, target_port = target.rpartition(":")
        if host.endswith(".test"):
            host = "127.0.0.1"
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(target_port))
        except OSError:
            reply(502, "Bad Gateway")
            writer.close()
            return
        reply(200, "Connection established")
        await writer.drain()
        await splice(reader, writer, up_reader, up_writer)

    return handle


def tls(upstream_port):
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            writer.close()
            return
        await splice(reader, writer, up_reader, up_writer)

    return handle


async def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    context = None
    if mode == "proxy":
        args = sys.argv[4:]
        auth = args[args.index("--auth") + 1] if "--auth" in args else None
        answer = int(args[args.index("--answer") + 1]) if "--answer" in args else None
        handler = proxy(port, sys.argv[3], auth, answer)
    elif mode == "tls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[3], sys.argv[4])
        handler = tls(int(sys.argv[5]))
    else:
        sys.exit(f"unknown mode {mode}")
    server = await asyncio.start_server(handler, "127.0.0.1", port, ssl=context)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
