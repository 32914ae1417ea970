"""callpush domain: Stream call events in, VoIP / FCM / alert pushes out."""
