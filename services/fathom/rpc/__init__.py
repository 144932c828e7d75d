"""gRPC contracts (``protos/fathom/v1``) and their generated stubs (``fathom.rpc.gen``)."""
