"""Business logic between the routers and the engine/backends."""
