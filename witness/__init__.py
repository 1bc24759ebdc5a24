"""The witness: cosigns a log checkpoint only when it is consistent with all it cosigned before."""
