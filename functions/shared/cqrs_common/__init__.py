"""What the six CQRS roles share: roles, events, validation, storage, HTTP and logging."""
