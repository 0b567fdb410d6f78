"""The report people read (report.html, report.md): `content` decides what it
says (verdict first, the metrics table with baselines, curves, five test rows
side by side, the run in words, the resolved config), `charts` draws the
curves, `html` and `markdown` lay the same content out. `report.write_report`
is the entry point."""
