"""What operators read and do: the event log, replays, retention, configuration, metrics."""
