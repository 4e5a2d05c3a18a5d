# Scenario files (*.toml) for `serialine sim`. This file only makes the folder a package of the
# installed wheel (serialine.scenarios, host/resources.py).
