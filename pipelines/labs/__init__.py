"""Lab result anomaly screening: catalogue, rules, anomaly model, history, alerts."""
