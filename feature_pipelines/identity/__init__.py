"""Identity stitching: edges and guardrails, persons with stable ids, the bitemporal alias map, accuracy."""
