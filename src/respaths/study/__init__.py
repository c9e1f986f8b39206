"""The paper's whole study and its report: the study on any model (run), training the preset nets first
(reproduce), reading a run back (read), the claims and report.html (report), the figures (figures),
and run.json's record (run_record).
"""
