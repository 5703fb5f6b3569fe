"""inetd-style HTTP/1.0 server for the eBPF tests: the parent accepts, a
forked child dup2's the socket onto fd 0 and fd 1, closes every other copy
and execs a handler that reads the request from stdin, closes stdin (the
socket stays open on fd 1) and writes the response to stdout. Prints its
port, then serves until killed. /missing* 404, anything else 200.
"""
import os
import signal
import socket
import sys

HANDLER = r"""
import os
data = b""
while b"\r\n\r\n" not in data:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    data += chunk
os.close(0)
parts = data.split(b"\r\n", 1)[0].split()
path = parts[1] if len(parts) > 1 else b"/"
code = 404 if path.startswith(b"/missing") else 200
body = b"ok\n"
os.write(1, b"HTTP/1.0 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
         % (code, len(body), body))
"""

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(64)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    if os.fork() == 0:
        os.dup2(c.fileno(), 0)
        os.dup2(c.fileno(), 1)
        c.close()
        s.close()
        os.execv(sys.executable, [sys.executable, "-c", HANDLER])
    c.close()
