"""Workloads on the device: Quadlet units for podman containers."""
