-- The reconciler reads each service's failure streak on every pass (store/tasks.py
-- failure_streaks): finished tasks by target and outcome, newest last.
CREATE INDEX tasks_by_outcome ON tasks (state, project_id, service, ended);
