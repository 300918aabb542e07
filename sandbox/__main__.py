"""``python -m sandbox serve ...``: the same command without the gateway's CLI."""

from sandbox.cli import sandbox_group

sandbox_group(prog_name="python -m sandbox")
