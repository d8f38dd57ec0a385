"""Style sheet of the HTML report (inlined into every page)."""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #0072B2;padding-bottom:.2em}
h2{font-size:1.25em;margin-top:1.8em;color:#0072B2}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f0f4f8}
td.text,th.text{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.warning{background:#fff3cd;border-left:6px solid #E69F00;padding:.7em 1em;margin:1em 0;font-weight:600}
.note{color:#555;font-size:.9em}
.ok{background:#cfe8ff !important}.bad{background:#ffd9b3 !important}
.mixed{background:#f1e6f5 !important}.na{background:#eee !important;color:#666}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.9em;color:#444}
code{background:#f3f3f3;padding:0 .2em}
.summary{background:#f7fafc;border:1px solid #d0dbe6;border-radius:6px;padding:.2em 1.2em 1em;margin:1em 0}
.summary h2{margin-top:.6em}.facts .fact{display:inline-block;margin-right:1.4em}
.headlines{display:flex;flex-wrap:wrap;gap:.8em;margin:.8em 0}
.headline{background:#fff;border:1px solid #d0dbe6;border-radius:6px;padding:.5em .8em;min-width:12em;flex:1}
.headline .label{font-size:.85em;color:#555}.headline .value{font-size:1.25em;font-weight:600}
.headline .hnote{font-size:.8em;color:#666}
.verdicts{list-style:none;padding-left:0}.verdicts li{margin:.3em 0}
.badge{display:inline-block;min-width:7.5em;text-align:center;border-radius:4px;padding:0 .4em;
margin-right:.5em;font-size:.85em;font-weight:600;border:1px solid #bbb}.reason{color:#555;font-size:.9em}
details{margin:.6em 0 1em}details pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.8em;
max-height:40em}
.gallery img{max-width:100%}
"""

#: HTML class of a table cell holding a claim verdict
VERDICT_CSS = {"supported": "ok", "mixed": "mixed", "not supported": "bad", "not tested": "na"}
