"""HTTP and WebSocket routers, thin: parse, call a service, shape the answer."""
