"""What runs in the capture kernel: kdump.conf, the collector, the capture run.

:mod:`capture.agent.config` reads kdump.conf into a typed
:class:`~capture.agent.config.Config`, :mod:`capture.agent.collector` turns
its ``core_collector`` line into engine options or an external command, and
:mod:`capture.agent.checkconfig` is ``kdump-capture check-config``. Nothing is
imported here: in the crash kernel every import is start-up time.
"""
