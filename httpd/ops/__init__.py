"""Operator commands that wire both halves: run, sandbox, check, speedtest, purge, alarm."""
