"""What Stream sends and serves: the event model, the webhook signature, its REST API and tokens."""
