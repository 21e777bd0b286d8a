"""`topo diff`: what a change of topology.yaml does to producers, consumers and brokers.

Two resolved models (the generator's load pipeline, `topo.generator.load`) are compared; every
difference becomes a `Change` classified by the rule table of docs/compatibility.md (`rules`):
payload changes judged by what the generated classes accept (`domains`, `payload`), broker
changes from the desired broker state and the groups' plumbing (`brokers`). `report` assembles
them and checks each event's `compatibility:` level for `topo validate --against`.
"""
