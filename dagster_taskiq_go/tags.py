"""Tags read and written by dagster-taskiq-go."""

QUEUE_TAG = "dagster-taskiq/queue"
PRIORITY_TAG = "dagster-taskiq/priority"
RUN_PRIORITY_TAG = "dagster-taskiq/run_priority"
TASK_ID_TAG = "dagster-taskiq/task_id"
