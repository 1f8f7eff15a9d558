"""What every layer agrees on, below everything else: JSON value rules, ids, reserved record
names, defaults from the environment, and short text for messages.

Nothing here does I/O beyond reading environment variables, and nothing here imports another
folder of the package except ``errors``.
"""
