"""DICOM: SR (TID 1500), SEG and secondary-capture writers (highdicom), STOW-RS and
C-STORE senders, a C-STORE SCP with study stability and routing, DICOMweb pull."""
