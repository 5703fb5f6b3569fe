"""gRPC server and client (Python grpcio, an insecure channel: h2c with
prior knowledge) for the eBPF HTTP/2 tests. No generated code: raw-bytes
methods of service demo.Greeter.

    grpc_demo.py server SLOW_MS     prints its port, serves until killed
    grpc_demo.py client PORT PLAN   PLAN: JSON [[method, n], ...], all on
                                    one channel (one connection); method
                                    "wait" prints "waiting" and reads a line
                                    from stdin first (the connection stays)

Methods: Ok (OK), Missing (NOT_FOUND), Fail (INTERNAL), Slow (OK after
SLOW_MS). The client prints each method's status codes.
"""

import json
import sys
import time
from concurrent import futures

import grpc

SERVICE = "demo.Greeter"


def serve(slow_ms):
    def ok(req, ctx):
        return b"ok:" + req

    def missing(req, ctx):
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def fail(req, ctx):
        ctx.abort(grpc.StatusCode.INTERNAL, "it broke")

    def slow(req, ctx):
        time.sleep(slow_ms / 1000.0)
        return b"slow"

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(fn)
        for name, fn in [("Ok", ok), ("Missing", missing), ("Fail", fail), ("Slow", slow)]
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def client(port, plan):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        for method, n in plan:
            if method == "wait":
                print("waiting", flush=True)
                sys.stdin.readline()
                continue
            call = ch.unary_unary(f"/{SERVICE}/{method}")
            codes = []
            for i in range(n):
                try:
                    call(b"x%d" % i, timeout=10)
                    codes.append("OK")
                except grpc.RpcError as e:
                    codes.append(e.code().name)
            print(method, codes, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        client(int(sys.argv[2]), json.loads(sys.argv[3]))
