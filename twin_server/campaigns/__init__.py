"""Campaigns: many what-if runs of one twin, stepped as fast as possible on Dask.

A campaign file (``spec``) names a twin, the parameters to vary and what to keep;
``plan_runs`` turns it into a deterministic list of runs; each run (``run.execute``) is
a fresh engine session stepped flat out, wherever Dask puts it (``runner``); the results
go to a SQLite file and CSV exports (``store``); ``cli`` is ``twin-server campaign``.
Nothing here runs inside the daemon: campaign workers are separate processes.
"""
