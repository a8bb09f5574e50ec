"""The node's operations (what each command means) and the one command table."""
