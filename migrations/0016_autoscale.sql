-- When a service's scale was last set by anyone (an operator, a manifest, a trigger, the
-- autoscaler) or an autoscale decision was announced in notify mode: autoscale waits
-- retrigger_delay after it (mariposa/metrics/autoscale.py). A column, not a search of the event
-- log, because the autoscaler asks for it every metrics_interval for every autoscaled service.
ALTER TABLE services ADD COLUMN last_scaled REAL;
