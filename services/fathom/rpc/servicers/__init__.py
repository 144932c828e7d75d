"""gRPC servicers: thin wrappers that convert, call a transport-free service object, convert back."""
