"""What every wing stands on: the typed settings, secrets, logging, metrics, bounded waits."""
