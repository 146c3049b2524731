"""Deployment: judging new audio with a gate from the CLI or over HTTP.

* :mod:`.scan`: long recordings, window by window (or per speech segment,
  :mod:`.speech_scan`), merged into segments (:mod:`.segments`);
* :mod:`.serve`: the HTTP service and its web page (``static/``), its per-upload work
  (:mod:`.judge`), enrolment routes (:mod:`.enrol_routes`) and guards (:mod:`.guard`).

Loading a gate is :func:`audiogate.gates.load`. The service's dependencies (fastapi, uvicorn)
are imported only by :mod:`.serve` and the modules it uses.
"""
