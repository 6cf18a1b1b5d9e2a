"""The answer policy: who answers a question (the object map, rules, the network)."""
