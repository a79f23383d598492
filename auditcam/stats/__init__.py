"""Statistics over the records: bootstrap intervals, estimates per slice, the analysis,
the checks and the paired comparison of two audits. Pure maths over tables: no model, no files."""
