"""A Python gRPC client that knows nothing of framewatch's protos: it learns them from the server's reflection
service with grpcio-reflection (which speaks reflection v1alpha), then calls QueryService.ListMetrics with message
classes built from what it learned. Prints one JSON object: the services and the metric names.

Usage: python reflection_client.py HOST:PORT
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def main() -> None:
    channel = grpc.insecure_channel(sys.argv[1])
    db = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(db.get_services())
    pool = descriptor_pool.DescriptorPool(db)
    query = pool.FindServiceByName("framewatch.v1.QueryService")
    method = query.FindMethodByName("ListMetrics")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{query.full_name}/{method.name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    response = call(request_class(), timeout=10)
    print(json.dumps({"services": services, "metrics": [m.name for m in response.metrics]}))


if __name__ == "__main__":
    main()
