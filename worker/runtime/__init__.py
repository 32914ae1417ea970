"""How processes run: settings, the Celery app and its tasks, embedded mode, the sweeper,
logging."""
