# The firmware is MicroPython, run from this folder (MICROPYPATH) or copied onto a board. This
# file only makes the folder a package of the installed wheel: the host finds it as
# serialine.firmware with importlib.resources (host/resources.py). Nothing imports it.
