"""HL7 v2: ORU^R01 parsing and building, ACKs, an MLLP listener."""
