"""mailward: a mail gateway with SMTP AUTH profiles, a durable group-commit queue and
appliance-exact mail_logs, plus a toolkit that reads and correlates those logs."""

__version__ = "0.1.0"
