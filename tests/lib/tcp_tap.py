"""tcp_tap.py: a TCP relay that records every byte it carries.

    tcp_tap.py --listen HOST:PORT --to HOST:PORT --record FILE

It stands on the link between two test hosts where tcpdump is not
installed: each connection accepted on --listen is joined to a new one to
--to, and what flows either way is appended to FILE as it passes, so a
test can look for what must not cross the link in clear.  Prints
"READY <port>" once it listens (port 0 picks one).  Test tooling, not a
fake: it speaks no protocol, and changes nothing it carries.
"""

import argparse
import asyncio
import sys


def host_port(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


async def pipe(reader, writer, record):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            record.write(data)
            record.flush()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--record", required=True)
    args = ap.parse_args()
    record = open(args.record, "ab")
    to = host_port(args.to)

    async def accepted(creader, cwriter):
        try:
            sreader, swriter = await asyncio.open_connection(*to)
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(pipe(creader, swriter, record),
                             pipe(sreader, cwriter, record))

    server = await asyncio.start_server(accepted, *host_port(args.listen))
    print("READY %d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
