"""Run stage: papermill execution of the analysis notebooks into atomic, versioned run folders
with provenance; the session every notebook opens; where results are written."""
