"""The Jenkins emulator: a stand-in for the Jenkins master that slave_manager
talks to, used by the integration tests, the demo and the benchmark. Its
entry point is tests/support/jenkins_emulator.py.

  tokenizer.py  Jenkins' CLI word splitting (QuotedStringTokenizer's port)
  scenario.py   what the emulated Jenkins knows: scenario, faults, logs, identity
  ssh.py        the SSH CLI: auth, one exec per connection, the commands
  web.py        the HTTP face (login headers, the jar) and the control endpoints
  main.py       flags, start-up, READY line, stop on SIGTERM/SIGINT
"""
