"""Batch runners that chain the stages: the demo now, plate gating next."""
