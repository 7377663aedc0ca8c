"""Beat: the whole schedule (`schedule`) and the scheduler that lets one beat send (`locked`)."""
