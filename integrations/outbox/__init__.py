"""The durable outbox: every outgoing object is a row in the service's store until a
destination has acknowledged it; a worker delivers with retries and backoff."""
