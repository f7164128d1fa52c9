"""atomicedge: image-based Linux for edge devices (OSTree-format store, image builder,
device agent with health checks and rollback, fleet update server)."""

__version__ = "0.1.0"
