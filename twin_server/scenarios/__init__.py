"""Test scenarios: steps and checks over a session's variables, run offline (a fresh
in-process session, faster than real time), live (a daemon over OPC UA, real time,
with its HIL peers) or on the server (RunScenario), reported as JUnit XML and Markdown.

    schema.py   the scenario file (TOML, pydantic), read with every error at once
    expr.py     the condition language (a safe recursive-descent parser, never eval)
    names.py    names in a scenario resolved against a session's variables
    runner.py   the steps and checks over a Target that owns time
    offline.py  a fresh in-process session as the Target (and RunScenario's)
    live.py     a daemon's session over OPC UA as the Target
    results.py  verdicts, step records, the trace
    junit.py    JUnit XML;  report.py  Markdown with SVG plots
    command.py  ``twin-server test``;  plugin.py  the pytest plugin
"""
