"""Instance metrics: the collector that samples every running instance through its driver's
``stats``, the last hour in memory (history.py), the day at one-minute resolution in SQLite, the
Prometheus text exposition and the autoscale triggers that act on them."""
