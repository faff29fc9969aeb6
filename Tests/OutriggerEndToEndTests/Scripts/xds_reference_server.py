#!/usr/bin/env python3
"""A small state-of-the-world ADS server built on Envoy's own generated types (PyPI xds-protos), to drive
an xDS client with genuine Envoy messages.

  xds_reference_server.py serve SPEC.json
      Serves envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources on
      127.0.0.1:<free port> (DeltaAggregatedResources answers UNIMPLEMENTED) and prints "port N".
      Runs until killed.

SPEC.json:
  {"listeners": [{"name": "web",
                  "address": "127.0.0.1:15001",       # socket listeners only
                  "direction": "OUTBOUND",            # optional: "INBOUND" | "OUTBOUND"
                  "api": false,                       # optional: true makes it an api_listener (for gRPC
                                                      #   proxyless clients): no address, no filter chain
                  "virtual_hosts": [{"name": "all", "domains": ["*"],
                                     "routes": [{"prefix": "/", "cluster": "backend"}]}]}],
   "clusters": [{"name": "backend",
                 "endpoints": ["127.0.0.1:8081", "127.0.0.1:8082"],
                 "extra_field": false}]}              # optional: true sets Cluster.respect_dns_ttl
                                                      #   (field 39), which Outrigger should NACK
  Each listener becomes a Listener whose HttpConnectionManager (as the only network filter
  "envoy.filters.network.http_connection_manager", or as the api_listener) loads the RouteConfiguration
  named like the listener over ADS (RDS), plus that RouteConfiguration. Each cluster becomes an EDS
  Cluster (ROUND_ROBIN, connect_timeout 1s) plus a ClusterLoadAssignment with one locality (weight 1).

Protocol: per stream and type, the first request gets every resource of the type (RDS and EDS: only the
requested names when resource_names is non-empty) with the current version ("1" at start) and a fresh
nonce. Later requests are ACKs/NACKs and get no answer, unless they change the requested names so that
the answer would differ from what was last sent. SPEC.json's mtime is polled every 200 ms; after a change
the version becomes "2", "3", ... and every stream gets each subscribed type whose resources changed.

stdout, one JSON object per line (flushed):
  {"event": "request", "type": SHORT, "version": V, "nonce": N, "names": [...], "error": MSG|null, "node": ID}
  {"event": "response", "type": SHORT, "version": V, "nonce": N, "names": [...]}
  {"event": "update", "version": V}          (after SPEC.json changed)
where SHORT is Listener, RouteConfiguration, Cluster or ClusterLoadAssignment; "error" is the NACK's
error_detail.message; "node" is the stream's node id (clients send the node only on a stream's first
request, so later lines repeat it).
"""
import itertools
import json
import os
import queue
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

PREFIX = "type.googleapis.com/envoy.config."
LDS = PREFIX + "listener.v3.Listener"
RDS = PREFIX + "route.v3.RouteConfiguration"
CDS = PREFIX + "cluster.v3.Cluster"
EDS = PREFIX + "endpoint.v3.ClusterLoadAssignment"
FILTERED = (RDS, EDS)


def log(**fields):
    print(json.dumps(fields), flush=True)


def short(type_url):
    return type_url.rsplit(".", 1)[-1]


def pack(message):
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def socket_address(host_port):
    host, _, port = host_port.rpartition(":")
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=int(port)))


def ads_source():
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def listener(spec):
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=spec["name"],
        rds=hcm_pb2.Rds(config_source=ads_source(), route_config_name=spec["name"]),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))])
    if spec.get("api"):
        return listener_pb2.Listener(name=spec["name"], api_listener=api_listener_pb2.ApiListener(api_listener=pack(hcm)))
    result = listener_pb2.Listener(
        name=spec["name"],
        address=socket_address(spec["address"]),
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm))])])
    if "direction" in spec:
        result.traffic_direction = base_pb2.TrafficDirection.Value(spec["direction"])
    return result


def route_configuration(spec):
    hosts = [route_components_pb2.VirtualHost(
        name=host["name"], domains=host.get("domains", ["*"]),
        routes=[route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix=route["prefix"]),
                                           route=route_components_pb2.RouteAction(cluster=route["cluster"]))
                for route in host["routes"]])
        for host in spec.get("virtual_hosts", [])]
    return route_pb2.RouteConfiguration(name=spec["name"], virtual_hosts=hosts)


def cluster(spec):
    result = cluster_pb2.Cluster(
        name=spec["name"], type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()),
        connect_timeout=duration_pb2.Duration(seconds=1), lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)
    if spec.get("extra_field"):
        result.respect_dns_ttl = True
    return result


def load_assignment(spec):
    endpoints = [endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=socket_address(e)))
                 for e in spec.get("endpoints", [])]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=spec["name"],
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(), load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
            lb_endpoints=endpoints)])


def build(spec):
    """Returns {type_url: {name: Any}} for a parsed SPEC.json."""
    resources = {LDS: {}, RDS: {}, CDS: {}, EDS: {}}
    for item in spec.get("listeners", []):
        resources[LDS][item["name"]] = pack(listener(item))
        resources[RDS][item["name"]] = pack(route_configuration(item))
    for item in spec.get("clusters", []):
        resources[CDS][item["name"]] = pack(cluster(item))
        resources[EDS][item["name"]] = pack(load_assignment(item))
    return resources


class State:
    """The current resources and version, and the queues of the open streams."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.version = 0
        self.resources = None
        self.streams = set()
        self.nonces = itertools.count(1)
        self.mtime = None
        if self.reload() is None:
            sys.exit("cannot read " + path)

    def reload(self):
        """Rereads SPEC.json if its mtime changed; returns the open streams if the resources changed, else None."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime == self.mtime:
                return None
            with open(self.path) as handle:
                resources = build(json.load(handle))
        except (OSError, ValueError, KeyError):
            return None  # missing or half-written: try again at the next poll
        with self.lock:
            self.mtime = mtime
            if resources == self.resources:
                return None
            self.resources = resources
            self.version += 1
            streams = list(self.streams)
        return streams

    def poll(self):
        while True:
            time.sleep(0.2)
            streams = self.reload()
            if streams is not None:
                log(event="update", version=str(self.version))
                for stream in streams:
                    stream.put(("update", None))

    def snapshot(self, type_url, names):
        with self.lock:
            available = self.resources.get(type_url, {})
            if type_url in FILTERED and names:
                chosen = {name: available[name] for name in names if name in available}
            else:
                chosen = dict(available)
            return str(self.version), chosen


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, state):
        self.state = state

    def StreamAggregatedResources(self, request_iterator, context):
        events = queue.Queue()

        def read():
            try:
                for request in request_iterator:
                    events.put(("request", request))
            except grpc.RpcError:
                pass
            events.put(("end", None))

        with self.state.lock:
            self.state.streams.add(events)
        threading.Thread(target=read, daemon=True).start()
        node = ""        # clients send the node only on a stream's first request
        subscribed = {}  # type_url -> requested names
        sent = {}        # type_url -> {name: Any} last sent on this stream
        try:
            while context.is_active():
                try:
                    kind, request = events.get(timeout=0.5)
                except queue.Empty:
                    continue
                if kind == "end":
                    return
                if kind == "request":
                    node = request.node.id or node
                    error = request.error_detail.message if request.HasField("error_detail") else None
                    log(event="request", type=short(request.type_url), version=request.version_info,
                        nonce=request.response_nonce, names=list(request.resource_names), error=error, node=node)
                    subscribed[request.type_url] = list(request.resource_names)
                    types = [request.type_url]
                else:
                    types = list(subscribed)
                for type_url in types:
                    version, chosen = self.state.snapshot(type_url, subscribed[type_url])
                    if type_url in sent and sent[type_url] == chosen:
                        continue
                    sent[type_url] = chosen
                    nonce = str(next(self.state.nonces))
                    log(event="response", type=short(type_url), version=version, nonce=nonce, names=sorted(chosen))
                    yield discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce,
                                                          resources=list(chosen.values()))
        finally:
            with self.state.lock:
                self.state.streams.discard(events)

    def DeltaAggregatedResources(self, request_iterator, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "delta xDS is not supported")


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        sys.exit(__doc__)
    state = State(sys.argv[2])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(state), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("port %d" % port, flush=True)
    threading.Thread(target=state.poll, daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
