"""Breaking the lab and judging it: the fault registry, faults, boot priority, scenarios, measure, stories."""
