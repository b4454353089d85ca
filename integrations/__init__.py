"""Integrations with hospital systems (HL7 v2, ...)."""
