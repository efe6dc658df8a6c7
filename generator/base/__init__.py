"""The base every layer may import: the error family, atomic file writes, process helpers, the loopback guard.

Imports nothing of kafkanet. The errors decide exit codes (user errors 2,
infrastructure 1); ``files.write_atomic`` is the one way a file is written;
``procs`` reads and stops the processes kafkanet starts (by pid, checking that
the pid is still ours); ``endpoints.is_loopback_url`` is the network-safety
guard every local-target client passes through.
"""
