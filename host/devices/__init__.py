"""TCP line-protocol drivers for the coder and the camera (see docs/devices.md)."""
