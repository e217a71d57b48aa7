"""Run infrastructure: device and seeding, run directories and logs, file helpers."""
