"""FHIR R4: DiagnosticReport + Observations for AI findings (fhir.resources R4B
models), delivered as an idempotent transaction bundle by an httpx client."""
