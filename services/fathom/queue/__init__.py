"""The Celery side of the plane: queues and lanes, task bodies, the queue-backed tool runner."""
