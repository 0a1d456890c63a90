"""koku (刻, "to carve time"): a cron daemon and manager."""

__version__ = "0.1.0"
