#!/usr/bin/env python3
"""An ext_authz v3 client that shares no code with portcullis.

It uses grpcio and the `xds-protos` stubs that the gRPC team generates from
Envoy's data-plane-api, builds CheckRequests the way Envoy does, calls
envoy.service.auth.v3.Authorization/Check and prints, as JSON on stdout, what
came back on the wire. tests/wire_compat.rs drives it and asserts on the result.

Usage: check_client.py HOST:PORT < cases.json

cases.json is a JSON list of objects:
  {"name": str, "method": str, "path": str, "host": str,
   "headers": {name: value} | absent,      # the default `headers` map
   "header_map": [[name, value], ...] | absent}   # encode_raw_headers mode
Tokens arrive on stdin so they never show up in a process listing.

Exit status: 0 when every RPC completed (whatever the decision), 2 on a
usage or import problem, 3 when an RPC itself failed.
"""

import json
import sys

try:
    import grpc
    from google.protobuf import json_format
    from envoy.config.core.v3 import base_pb2
    from envoy.service.auth.v3 import attribute_context_pb2
    from envoy.service.auth.v3 import external_auth_pb2
    from envoy.service.auth.v3 import external_auth_pb2_grpc
    from envoy.type.v3 import http_status_pb2
except ImportError as err:  # the Rust test turns this into a skip or a failure
    print(f"missing Python dependency: {err}", file=sys.stderr)
    sys.exit(2)

try:
    from google.protobuf.unknown_fields import UnknownFieldSet
except ImportError:  # older protobuf runtimes
    UnknownFieldSet = None

APPEND_ACTION = base_pb2.HeaderValueOption.HeaderAppendAction


def build_request(case):
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id="1",
        method=case["method"],
        path=case["path"],
        host=case["host"],
        scheme="https",
        protocol="HTTP/2",
    )
    pseudo = {
        ":authority": case["host"],
        ":method": case["method"],
        ":path": case["path"],
        ":scheme": "https",
    }
    if "header_map" in case:
        # Envoy's encode_raw_headers mode: key plus raw_value bytes, value left empty.
        for name, value in list(pseudo.items()) + [tuple(pair) for pair in case["header_map"]]:
            http.header_map.headers.add(key=name, raw_value=value.encode("utf-8"))
    else:
        http.headers.update(pseudo)
        http.headers.update(case.get("headers", {}))
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.CopyFrom(http)
    request.attributes.request.time.GetCurrentTime()
    request.attributes.source.address.socket_address.address = "127.0.0.1"
    request.attributes.source.address.socket_address.port_value = 40000
    return request


def header_options(options):
    out = []
    for option in options:
        out.append(
            {
                "key": option.header.key,
                "value": option.header.value,
                "raw_value_len": len(option.header.raw_value),
                # None when the deprecated BoolValue `append` is unset.
                "append": option.append.value if option.HasField("append") else None,
                "append_action": APPEND_ACTION.Name(option.append_action),
                "keep_empty_value": option.keep_empty_value,
            }
        )
    return out


def field_is_repeated(field):
    # protobuf 7 dropped FieldDescriptor.label in favour of is_repeated.
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def http_status_name(code):
    try:
        return http_status_pb2.StatusCode.Name(code)
    except ValueError:
        return None


def unknown_field_count(message):
    """Fields the stubs do not know (the server speaks a newer schema)."""
    if UnknownFieldSet is None:
        return None
    count = len(UnknownFieldSet(message))
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field_is_repeated(field):
            if field.message_type.GetOptions().map_entry:
                continue
            for item in value:
                count += unknown_field_count(item)
        else:
            count += unknown_field_count(value)
    return count


def summarize(response):
    summary = {
        "rpc": "OK",
        "has_status": response.HasField("status"),
        "status_code": response.status.code,
        "status_message": response.status.message,
        "http_response": response.WhichOneof("http_response"),
        "has_dynamic_metadata": response.HasField("dynamic_metadata"),
        "dynamic_metadata": json_format.MessageToDict(response.dynamic_metadata),
        "unknown_fields": unknown_field_count(response),
    }
    which = summary["http_response"]
    if which == "ok_response":
        ok = response.ok_response
        summary["ok"] = {
            "headers": header_options(ok.headers),
            "headers_to_remove": list(ok.headers_to_remove),
            "response_headers_to_add": header_options(ok.response_headers_to_add),
            "query_parameters_to_set": [[p.key, p.value] for p in ok.query_parameters_to_set],
            "query_parameters_to_remove": list(ok.query_parameters_to_remove),
            "has_deprecated_dynamic_metadata": ok.HasField("dynamic_metadata"),
        }
    elif which in ("denied_response", "error_response"):
        denied = getattr(response, which)
        summary["denied"] = {
            "has_status": denied.HasField("status"),
            "http_status": denied.status.code,
            "http_status_name": http_status_name(denied.status.code),
            "headers": header_options(denied.headers),
            "body": denied.body,
        }
    return summary


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    address = sys.argv[1]
    cases = json.load(sys.stdin)
    results = {}
    failed = False
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        for case in cases:
            try:
                response = stub.Check(build_request(case), timeout=30)
                results[case["name"]] = summarize(response)
            except grpc.RpcError as err:
                failed = True
                results[case["name"]] = {"rpc": err.code().name, "rpc_details": err.details()}
    json.dump(
        {"client": f"grpcio {grpc.__version__}", "results": results},
        sys.stdout,
        indent=2,
        sort_keys=True,
    )
    sys.stdout.write("\n")
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
