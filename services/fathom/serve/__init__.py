"""Process entry points of the distributed plane (docs/PLANE.md)."""
