"""Generates framewatch's Python gRPC stubs from proto/framewatch/v1/*.proto with grpcio-tools.

Usage: python generate_stubs.py [OUT_DIR]      (default: stubs/ next to this file)

The stubs land in OUT_DIR/framewatch/v1/ (frame_pb2.py, ingest_pb2.py, ingest_pb2_grpc.py, query_pb2.py,
query_pb2_grpc.py); put OUT_DIR on sys.path (stream_folder.py's --stubs does) and import framewatch.v1.*.
They are generated, not committed, so they always match the protos of the framewatch you run.
"""

import importlib.resources
import pathlib
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"


def generate(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "framewatch" / "v1").glob("*.proto"))
    if not protos:
        sys.exit(f"no .proto files under {PROTO_ROOT / 'framewatch' / 'v1'}")
    # google/protobuf/timestamp.proto ships inside grpcio-tools.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed (see above)")


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "stubs"
    generate(target)
    print(target)
