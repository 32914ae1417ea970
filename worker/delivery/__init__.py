"""Who must be told and what they get: rings, fan-outs, recipients, devices, payloads, outcomes."""
