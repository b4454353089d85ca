"""Chest CT pneumonia: series assembly, preprocessing, inference, lesions."""
