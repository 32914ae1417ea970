"""Storage: the durable inbox of webhooks, the device registry and the delivery records."""
