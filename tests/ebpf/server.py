"""HTTP/1.1 test server for the eBPF tests: thread per connection,
keep-alive, short headers. Prints its port, then serves until killed.

Routes (status by path, so a mismatched pairing shows up as a wrong
error rate): /ok/* 200, /missing* 404, /fail* 500, /slow 200 after
SLOW_MS, POST /items 201, /pipe/a 200, /pipe/b 404, /pipe/c 500,
anything else 200.

With CERT and KEY after SLOW_MS it serves HTTPS (Python's ssl module:
the system's libssl, or the one LD_LIBRARY_PATH points to).
"""
import http.server
import ssl
import sys
import time

SLOW_MS = int(sys.argv[1]) if len(sys.argv) > 1 else 200


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "t"
    sys_version = ""

    def date_time_string(self, timestamp=None):
        return "d"

    def log_message(self, *args):
        pass

    def reply(self, status):
        # the whole response in one write, as most servers do for small ones
        body = b"ok"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

    def status_for(self, path):
        p = path.split("?")[0]
        if p.startswith("/missing"):
            return 404
        if p.startswith("/fail") or p == "/pipe/c":
            return 500
        if p == "/pipe/b":
            return 404
        if p == "/slow":
            time.sleep(SLOW_MS / 1000.0)
        return 200

    def do_GET(self):
        self.reply(self.status_for(self.path))

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        self.reply(201)


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if len(sys.argv) > 3:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
