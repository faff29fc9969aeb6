#!/usr/bin/env python3
"""A real gRPC server with grpcio's standard health service (grpc.health.v1, from grpcio-health-checking).

  grpc_health_server.py CONTROL_FILE   serves on 127.0.0.1:<free port>, prints "port N"; the health of the
                                       service "users.v1.Users" follows CONTROL_FILE's content (SERVING or
                                       NOT_SERVING, checked every 20 ms), and each change prints "status S".
"""
import os
import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "users.v1.Users"


def main():
    control = sys.argv[1]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    status = None
    print("port %d" % port, flush=True)
    while True:
        wanted = "SERVING"
        if os.path.exists(control):
            with open(control) as handle:
                wanted = handle.read().strip() or "SERVING"
        if wanted != status:
            status = wanted
            value = health_pb2.HealthCheckResponse.SERVING if wanted == "SERVING" else health_pb2.HealthCheckResponse.NOT_SERVING
            servicer.set(SERVICE, value)
            print("status %s" % status, flush=True)
        time.sleep(0.02)


if __name__ == "__main__":
    main()
