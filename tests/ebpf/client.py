"""HTTP clients for the eBPF tests. Usage: client.py PORT PLAN, where PLAN
is a JSON list of steps:
  ["keepalive", METHOD, PATH, N]   N requests on one keep-alive connection
                                   (http.client; PATH may hold {i})
  ["pipeline", [PATH, ...]]        one write with all the GETs, then read
                                   every response (raw socket)
  ["msg", PATH, N]                 N one-shot GETs through sendmsg/recvmsg
  ["pipeline_sends", [PATH, ...]]  the GETs in one send each, then read
                                   every response (raw socket)
  ["parallel", PATH, C, N]         C keep-alive connections open at once,
                                   N GETs on each, taken in turns
  ["continue", PATH, N]            N POSTs on one raw keep-alive socket,
                                   each with `Expect: 100-continue`: the
                                   headers, the server's 100, the body in a
                                   send of its own, the final response
  ["oneshot", METHOD, PATH, N]     N requests, a connection each
                                   (http.client, `Connection: close`)
Exits non-zero if any response is short or unexpected.

With CLIENT_TLS=1 every connection is HTTPS (Python's ssl module, no
certificate check); "msg" (sendmsg has no TLS form) is refused then.
"""
import http.client
import json
import os
import socket
import ssl
import sys

port = int(sys.argv[1])
plan = json.loads(sys.argv[2])
TLS = os.environ.get("CLIENT_TLS") == "1"
CTX = ssl._create_unverified_context() if TLS else None


def conn():
    """A keep-alive http.client connection (HTTPS with CLIENT_TLS=1)."""
    if TLS:
        return http.client.HTTPSConnection("127.0.0.1", port, context=CTX)
    return http.client.HTTPConnection("127.0.0.1", port)


def raw():
    """A connected socket (TLS-wrapped with CLIENT_TLS=1)."""
    s = socket.create_connection(("127.0.0.1", port))
    return CTX.wrap_socket(s, server_hostname="localhost") if TLS else s


def read_responses(sock, n, recv):
    """Read n responses with Content-Length bodies; returns their codes."""
    buf = b""
    codes = []
    while len(codes) < n:
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = buf[:head_end].decode()
                length = 0
                for line in head.split("\r\n")[1:]:
                    k, _, v = line.partition(":")
                    if k.lower() == "content-length":
                        length = int(v)
                if len(buf) >= head_end + 4 + length:
                    codes.append(int(head.split(" ")[1]))
                    buf = buf[head_end + 4 + length:]
                    break
            chunk = recv(sock)
            if not chunk:
                sys.exit("connection closed early")
            buf += chunk
    return codes


for step in plan:
    kind = step[0]
    if kind == "keepalive":
        _, method, path, n = step
        c = conn()
        for i in range(n):
            body = b"x" * 10 if method == "POST" else None
            c.request(method, path.replace("{i}", str(i)), body=body)
            r = c.getresponse()
            r.read()
        c.close()
    elif kind == "oneshot":
        _, method, path, n = step
        for i in range(n):
            c = conn()
            body = b"x" * 10 if method == "POST" else None
            c.request(method, path.replace("{i}", str(i)), body=body,
                      headers={"Connection": "close"})
            r = c.getresponse()
            r.read()
            c.close()
    elif kind == "pipeline":
        paths = step[1]
        s = raw()
        req = b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p.encode() for p in paths)
        s.sendall(req)
        codes = read_responses(s, len(paths), lambda s: s.recv(65536))
        print("pipeline", codes, flush=True)
        s.close()
    elif kind == "msg":
        if TLS:
            sys.exit("msg: no sendmsg over TLS")
        _, path, n = step
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendmsg([b"GET %s HTTP/1.1\r\nHost: t\r\n" % path.encode(), b"Connection: close\r\n\r\n"])
            read_responses(s, 1, lambda s: s.recvmsg(65536)[0])
            s.close()
    elif kind == "pipeline_sends":
        paths = step[1]
        s = raw()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for p in paths:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p.encode())
        codes = read_responses(s, len(paths), lambda s: s.recv(65536))
        print("pipeline_sends", codes, flush=True)
        s.close()
    elif kind == "parallel":
        _, path, conns, n = step
        cs = [conn() for _ in range(conns)]
        for i in range(n):
            for c in cs:
                c.request("GET", path.replace("{i}", str(i)))
                c.getresponse().read()
        for c in cs:
            c.close()
    elif kind == "continue":
        _, path, n = step
        s = raw()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = b"y" * 10
        for i in range(n):
            s.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                      b"Expect: 100-continue\r\n\r\n" % (path.encode(), len(body)))
            interim = s.recv(65536)
            if not interim.startswith(b"HTTP/1.1 100"):
                sys.exit("no 100 Continue: %r" % interim)
            s.sendall(body)
            codes = read_responses(s, 1, lambda s: s.recv(65536))
            if codes != [201]:
                sys.exit("continue: %r" % codes)
        s.close()
    else:
        sys.exit("unknown step %r" % (kind,))
print("done", flush=True)
