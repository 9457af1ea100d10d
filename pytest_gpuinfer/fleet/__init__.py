"""Many machines, many suites: merge their reports, export requirements, route tests to runners."""
