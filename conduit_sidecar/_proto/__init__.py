"""Generated protobuf and gRPC modules for conduit.v1 (scripts/gen_proto.py; do not edit).

Import them under private aliases; their names are not part of the public API.
"""
