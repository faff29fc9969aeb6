"""Checks that every message, field and enum value declared in Protos/envoy (and google/rpc) has Envoy's own
number, type, label and oneof, by comparing our compiled descriptors with Envoy's generated Python types
(PyPI xds-protos). Prints one line per mismatch and exits 1, or prints a count and exits 0.

Usage: xds_wire_compat.py PROTOS_DIR
"""
import importlib
import os
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_tools import protoc
import grpc_tools

ENVOY_MODULES = [
    "envoy.service.discovery.v3.ads_pb2",
    "envoy.service.discovery.v3.discovery_pb2",
    "envoy.config.core.v3.base_pb2",
    "envoy.config.core.v3.address_pb2",
    "envoy.config.core.v3.config_source_pb2",
    "envoy.config.core.v3.health_check_pb2",
    "envoy.config.core.v3.protocol_pb2",
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.listener.v3.listener_components_pb2",
    "envoy.config.listener.v3.api_listener_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.config.route.v3.route_components_pb2",
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.cluster.v3.circuit_breaker_pb2",
    "envoy.config.cluster.v3.outlier_detection_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "envoy.config.endpoint.v3.endpoint_components_pb2",
    "envoy.extensions.transport_sockets.tls.v3.common_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.type.matcher.v3.regex_pb2",
    "envoy.type.matcher.v3.string_pb2",
    "envoy.type.v3.percent_pb2",
    "envoy.type.v3.range_pb2",
    "google.rpc.status_pb2",
]


def ours(protos_dir):
    files = []
    for root, _, names in os.walk(protos_dir):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), protos_dir)
            # Envoy's only: not ours (outrigger/…) nor etcd's (etcd/…, checked against a real etcd by the tests),
            # relative to Protos (a checkout may itself live under a directory of either name).
            if name.endswith(".proto") and not relative.startswith(("outrigger" + os.sep, "etcd" + os.sep)):
                files.append(relative)
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.pb")
        code = protoc.main(["protoc", "-I", protos_dir, "-I", include, "--include_imports",
                            "--descriptor_set_out=" + out] + sorted(files))
        if code != 0:
            sys.exit("protoc failed on our protos")
        descriptor_set = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as handle:
            descriptor_set.ParseFromString(handle.read())
    return [f for f in descriptor_set.file if not f.name.startswith("google/protobuf/")]


def walk_messages(prefix, messages):
    for message in messages:
        name = prefix + "." + message.name
        yield name, message
        yield from walk_messages(name, message.nested_type)


def walk_enums(prefix, file_or_message):
    for enum in file_or_message.enum_type:
        yield prefix + "." + enum.name, enum
    for message in getattr(file_or_message, "nested_type", []) if hasattr(file_or_message, "nested_type") else file_or_message.message_type:
        yield from walk_enums(prefix + "." + message.name, message)


def main():
    for module in ENVOY_MODULES:
        importlib.import_module(module)
    envoy = descriptor_pool.Default()
    problems = []
    checked = 0
    for file in ours(sys.argv[1]):
        for name, message in walk_messages(file.package, file.message_type):
            if message.options.map_entry:
                continue
            try:
                theirs = envoy.FindMessageTypeByName(name)
            except KeyError:
                problems.append(f"{file.name}: message {name} is not Envoy's")
                continue
            by_number = {f.number: f for f in theirs.fields}
            for field in message.field:
                checked += 1
                other = by_number.get(field.number)
                where = f"{name}.{field.name} = {field.number}"
                if other is None:
                    problems.append(f"{where}: Envoy has no field {field.number}")
                    continue
                if other.name != field.name:
                    problems.append(f"{where}: Envoy calls field {field.number} '{other.name}'")
                if other.type != field.type:
                    problems.append(f"{where}: type {field.type}, Envoy's is {other.type}")
                if other.is_repeated != (field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED):
                    problems.append(f"{where}: repeated differs from Envoy's")
                their_type = other.message_type or other.enum_type
                if their_type is not None and field.type_name.lstrip(".") != their_type.full_name:
                    problems.append(f"{where}: of type {field.type_name}, Envoy's is {their_type.full_name}")
                if field.HasField("oneof_index") and not message.oneof_decl[field.oneof_index].name.startswith("_"):
                    oneof = message.oneof_decl[field.oneof_index].name
                    if other.containing_oneof is None or other.containing_oneof.name != oneof:
                        problems.append(f"{where}: in oneof {oneof}, Envoy's is not")
                elif other.containing_oneof is not None:
                    problems.append(f"{where}: Envoy's is in oneof {other.containing_oneof.name}")
        for name, enum in walk_enums(file.package, file):
            try:
                theirs = envoy.FindEnumTypeByName(name)
            except KeyError:
                problems.append(f"{file.name}: enum {name} is not Envoy's")
                continue
            values = {v.number: v.name for v in theirs.values}
            for value in enum.value:
                checked += 1
                if values.get(value.number) != value.name:
                    problems.append(f"{name}.{value.name} = {value.number}: Envoy's {value.number} is {values.get(value.number)}")
        for service in file.service:
            theirs = envoy.FindServiceByName(file.package + "." + service.name)
            for method in service.method:
                checked += 1
                other = theirs.methods_by_name.get(method.name)
                if other is None or other.input_type.full_name != method.input_type.lstrip(".") \
                        or other.output_type.full_name != method.output_type.lstrip("."):
                    problems.append(f"{service.name}.{method.name}: not Envoy's")
    for problem in problems:
        print(problem)
    print(f"checked {checked} fields, enum values and methods; {len(problems)} differ from Envoy's")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
