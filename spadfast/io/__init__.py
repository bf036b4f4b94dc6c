"""Files in and out: 2-D images and label maps, NIfTI / ITK / DICOM volumes, orientation, intensity normalisation,
output-path checks."""
