"""Sub-commands of the `realtime` CLI (see realtime/cli.py for the module contract)."""
