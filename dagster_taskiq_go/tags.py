"""Tags read and written by dagster-taskiq-go."""

QUEUE_TAG = "dagster-taskiq/queue"
PRIORITY_TAG = "dagster-taskiq/priority"
RUN_PRIORITY_TAG = "dagster-taskiq/run_priority"
TASK_ID_TAG = "dagster-taskiq/task_id"
# Set by TaskiqRunLauncher: the queue the run went to. Not dagster-taskiq/queue, which would route the
# run's steps.
RUN_QUEUE_TAG = "dagster-taskiq/run_queue"
