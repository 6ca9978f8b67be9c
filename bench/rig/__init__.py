"""The call rig: the service's production and embedded shapes as processes, an open-loop driver of
Twilio's callbacks, and the accounting (latency percentiles, CPU and RSS from ``/proc``) that
``bench.calls`` reports."""
