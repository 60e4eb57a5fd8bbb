"""Plain helpers shared by the apps: outbound HTTP, storage, logs, metrics."""
