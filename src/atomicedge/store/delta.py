"""Static delta generation and application (ostree format)."""
