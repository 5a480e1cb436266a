"""attio-usermaven-sync: Attio deal stage changes as Usermaven custom events."""

__version__ = "0.1.0"
