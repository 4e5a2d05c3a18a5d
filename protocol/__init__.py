"""The wire protocol between the line device and the host agent.

`protocol.schema` is the single source of truth: every other codec is generated from it
or tested byte for byte against it.
"""
