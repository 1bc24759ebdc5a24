"""Peer brokers for ``make bench``: the same workload shapes against Mosquitto and Synapse.

Each peer is installed by the bench itself into ``bench/.peers/`` (gitignored),
bound to 127.0.0.1 on a free port, and stopped by its PID when the bench ends,
also on error.  A peer that cannot be installed is reported as skipped, with the
reason, instead of failing the whole run.
"""
