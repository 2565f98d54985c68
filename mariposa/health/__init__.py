"""Health checks: the probes (``checks``) and, around them, what schedules them and tells the
reconciler. Probes never raise for a failing target, so one bad instance cannot take the checker
nursery down with it."""
