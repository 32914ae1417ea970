"""Local fakes of APNs and FCM, their credentials, and the pytest fixtures that run them."""
