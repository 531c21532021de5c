"""The AWS proxy between slave_manager (or the benchmark) and moto's server:
it counts every call, delays and throttles as real AWS does, and injects
faults. Its entry point is tests/support/fault_proxy.py, which documents the
flags and the control API.

  wire.py      AWS requests (service, region, action) and error answers
  matching.py  which calls a rule is for; checking a rule's numbers
  faults.py    the fault rules
  latency.py   the latency model: answer delays, token buckets, launch caps
  server.py    the threaded HTTP proxy, ClientToken idempotency, call log,
               control API
"""
