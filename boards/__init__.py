# One folder per board (its board.py; sim also has the unix-port driver). This file only makes
# the folder a package of the installed wheel (serialine.boards, host/resources.py).
