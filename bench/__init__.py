"""koku's benchmark against yacron and Debian's cron; run it with ``python3 bench/run.py``."""
