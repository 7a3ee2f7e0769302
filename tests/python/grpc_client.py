"""Drives jfconnect's gRPC service with Python's grpcio, stubs generated from the proto.

Usage: grpc_client.py STUBS_DIR ADDRESS TOKEN. Prints one line per step; the Rust test
(tests/grpc_python.rs) changes the entitlements after the line "watch-first" and expects the
line "watch-next" with the new version.
"""

import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from jfconnect.v1 import entitlements_pb2 as pb  # noqa: E402
from jfconnect.v1 import entitlements_pb2_grpc as rpc  # noqa: E402

address, token = sys.argv[2], sys.argv[3]
channel = grpc.insecure_channel(address)
stub = rpc.EntitlementsStub(channel)
auth = [("authorization", "Bearer " + token)]


def say(*words):
    print(*words, flush=True)


for metadata in ([], [("authorization", "Bearer wrong")]):
    try:
        stub.GetEntitlements(pb.GetEntitlementsRequest(), metadata=metadata, timeout=5)
        say("error: a call without the right token was answered")
        sys.exit(1)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAUTHENTICATED:
            say("error: expected UNAUTHENTICATED, got", e.code())
            sys.exit(1)
say("unauthenticated")

reply = stub.GetEntitlements(pb.GetEntitlementsRequest(), metadata=auth, timeout=5)
say("get", reply.version, reply.jpd_id, pb.Source.Name(reply.source),
    ",".join(e.feature for e in reply.entitlements))

yes = stub.Check(pb.CheckRequest(product="xray", feature="scan"), metadata=auth, timeout=5)
no = stub.Check(pb.CheckRequest(product="xray", feature="sbom"), metadata=auth, timeout=5)
say("check", yes.entitled, yes.valid_until, no.entitled)

stream = stub.WatchEntitlements(pb.WatchRequest(), metadata=auth, timeout=10)
first = next(stream)
say("watch-first", first.version)
second = next(stream)
say("watch-next", second.version, ",".join(e.feature for e in second.entitlements))
stream.cancel()

resumed = stub.WatchEntitlements(pb.WatchRequest(last_version=second.version),
                                 metadata=auth, timeout=1)
try:
    got = next(resumed)
    say("error: a resumed watch sent", got.version, "again")
    sys.exit(1)
except grpc.RpcError as e:
    say("resume", e.code().name)
