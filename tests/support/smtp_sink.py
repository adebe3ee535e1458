#!/usr/bin/env python3
"""An SMTP sink on 127.0.0.1 for the acknowledgement tests (aiosmtpd).

Every accepted message is written to DIR/NNNN.eml as received, with the envelope in
DIR/NNNN.rcpt. Recipients steer it, the way a real relay behaves:
  reject-*@...     550 5.1.1 (a permanent refusal), quoting the address as Postfix does
  tempfail-*@...   451 4.3.0 on the first attempt for that address, accepted after
Prints "READY" once listening.
"""
import argparse
import asyncio
import os
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.dir = directory
        self.tempfailed = set()
        self.n = len([f for f in os.listdir(directory) if f.endswith(".eml")])

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("reject-"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if local.startswith("tempfail-") and address not in self.tempfailed:
            self.tempfailed.add(address)
            return "451 4.3.0 <%s>: Try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        base = os.path.join(self.dir, "%04d" % self.n)
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        with open(base + ".rcpt", "w") as f:
            f.write("\n".join(envelope.rcpt_tos))
        os.rename(base + ".tmp", base + ".eml")
        return "250 Message accepted"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    c = Controller(Sink(a.dir), hostname="127.0.0.1", port=a.port, decode_data=False)
    c.start()
    print("READY", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()


if __name__ == "__main__":
    sys.exit(main())
