#!/usr/bin/env python3
"""The offers of one dealer in one DDD, from carat-catalogd (standard library only).

usage: python3 offers.py SOCKET DEALER DDD [--once]
Prints the offers in R$, then (without --once) again at each change, following
/v1/events. Exit: 1 error, 2 no such dealer or DDD, 3 not synced yet (--once).
"""
import http.client
import json
import socket
import sys
import time


class UnixHTTPConnection(http.client.HTTPConnection):  # HTTP/1.1 over a Unix socket
    def __init__(self, socket_path):
        super().__init__("localhost")
        self.socket_path = socket_path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


def brl(centavos):  # integer centavos as reais: 123456 -> "R$ 1.234,56"
    reais, cents = divmod(centavos, 100)
    return f"R$ {reais:,}".replace(",", ".") + f",{cents:02d}"


def show(offers):
    print(f"dealer {offers['dealer_code']}, DDD {offers['ddd']}, catalog {offers['general_hash']}")
    if offers["stale"]:
        print(f"warning: stale catalog, last confirmed by Carat at {offers['checked_at']}")
    for category in offers["categories"]:
        for r in category["amount_ranges"]:
            print(f"{r['amount_key']}  {brl(r['min_amount'])} – {brl(r['max_amount'])}")
        for f in category["fixed_amounts"]:
            print(f"{f['amount_key']}  {brl(f['amount'])}")
    sys.stdout.flush()


def read_offers(sock, path, etag, once):
    """GETs the offers with If-None-Match, prints them if they changed; returns the ETag to keep."""
    conn = UnixHTTPConnection(sock)
    conn.request("GET", path, headers={"If-None-Match": etag} if etag else {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status == 304:  # unchanged
        return etag
    if resp.status == 200:
        show(json.loads(body))
        return resp.getheader("ETag")
    error = json.loads(body)["error"]  # match on the code; the message is for people
    print(f"error: {error['code']}: {error['message']}", file=sys.stderr)
    if resp.status == 503 and not once:  # not synced yet: its catalog event will come
        return etag
    sys.exit({404: 2, 503: 3}.get(resp.status, 1))


def main():
    args = [a for a in sys.argv[1:] if a != "--once"]
    if len(args) != 3:
        sys.exit(__doc__)
    once, (sock, dealer, ddd) = "--once" in sys.argv, args
    path, etag = f"/v1/catalogs/normal/dealers/{dealer}/ddds/{ddd}", None
    while True:
        try:
            if once:
                return read_offers(sock, path, None, once)
            events = UnixHTTPConnection(sock)
            events.request("GET", "/v1/events")
            for line in events.getresponse():  # ": connected" first: subscribed, so read now
                if line.startswith((b": connected", b"data:")):  # any event: ask again (304 if same)
                    etag = read_offers(sock, path, etag, once)
        except (OSError, http.client.HTTPException) as e:
            print(f"error: {sock}: {e}", file=sys.stderr)
            if once:
                sys.exit(1)
        time.sleep(5)  # the stream ended (the daemon stopped or restarts): reconnect


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
