"""Sending mail through the task queue, with retries."""
